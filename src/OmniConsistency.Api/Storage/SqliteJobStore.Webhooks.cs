using Microsoft.Data.Sqlite;

namespace OmniConsistency.Api.Storage;

public sealed partial class SqliteJobStore
{
    private static WebhookDelivery ReadDelivery(SqliteDataReader r) => Rows.Delivery(r);


    public Task<IReadOnlyList<WebhookDelivery>> GetDeliveriesAsync(string jobId, CancellationToken ct) => ReadAsync(conn =>
    {
        var list = new List<WebhookDelivery>();
        using var cmd = Cmd(conn, null, $"SELECT {StoreRows.DeliveryColumns} FROM webhook_deliveries WHERE job_id = $j ORDER BY created_at, id", ("$j", jobId));
        using var r = cmd.ExecuteReader();
        while (r.Read()) list.Add(ReadDelivery(r));
        return (IReadOnlyList<WebhookDelivery>)list;
    }, ct);

    public Task<IReadOnlyList<WebhookDelivery>> ClaimDueDeliveriesAsync(string dispatcherId, DateTimeOffset now, int max, TimeSpan lease, CancellationToken ct) =>
        WriteAsync((conn, tx) =>
        {
            var list = new List<WebhookDelivery>();
            using (var cmd = Cmd(conn, tx,
                       $"SELECT {StoreRows.DeliveryColumns} FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $now " +
                       "AND (lease_expires_at IS NULL OR lease_expires_at < $now) ORDER BY next_attempt_at LIMIT $m",
                       ("$now", Ms(now)), ("$m", max)))
            using (var r = cmd.ExecuteReader())
                while (r.Read()) list.Add(ReadDelivery(r));
            foreach (var d in list)
                Exec(conn, tx, "UPDATE webhook_deliveries SET lease_owner = $o, lease_expires_at = $exp WHERE id = $id",
                    ("$o", dispatcherId), ("$exp", Ms(now + lease)), ("$id", d.Id));
            return (IReadOnlyList<WebhookDelivery>)list;
        }, ct);

    public Task RecordDeliveryRoundAsync(string deliveryId, DeliveryRound round, CancellationToken ct) => WriteAsync((conn, tx) =>
        Exec(conn, tx,
            "UPDATE webhook_deliveries SET status = $s, attempts = attempts + $n, next_attempt_at = COALESCE($next, next_attempt_at), " +
            "last_status_code = $code, last_error = $err, delivered_at = $del, lease_owner = NULL, lease_expires_at = NULL WHERE id = $id",
            ("$s", StoreRows.Wire(round.Status)), ("$n", round.AttemptsMade), ("$next", round.NextAttemptAt is { } t ? Ms(t) : null),
            ("$code", round.LastStatusCode), ("$err", round.LastError),
            ("$del", round.Status == DeliveryStatus.Delivered ? Ms(round.At) : null), ("$id", deliveryId)), ct);
}
