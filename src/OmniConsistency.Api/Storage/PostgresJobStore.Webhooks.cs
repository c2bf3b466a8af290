using Npgsql;

namespace OmniConsistency.Api.Storage;

public sealed partial class PostgresJobStore
{
    private static WebhookDelivery ReadDelivery(NpgsqlDataReader r) => Rows.Delivery(r);


    public Task<IReadOnlyList<WebhookDelivery>> GetDeliveriesAsync(string jobId, CancellationToken ct) => OnConnectionAsync(async conn =>
    {
        var list = new List<WebhookDelivery>();
        await using var cmd = Cmd(conn, null, $"SELECT {StoreRows.DeliveryColumns} FROM webhook_deliveries WHERE job_id = @j ORDER BY created_at, id", Text("j", jobId));
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct)) list.Add(ReadDelivery(r));
        return (IReadOnlyList<WebhookDelivery>)list;
    }, ct);

    public Task<IReadOnlyList<WebhookDelivery>> ClaimDueDeliveriesAsync(string dispatcherId, DateTimeOffset now, int max, TimeSpan lease, CancellationToken ct) =>
        WriteAsync(async tx =>
        {
            // Dispatchers in several API replicas share the outbox: each due row goes to exactly one of them.
            var list = new List<WebhookDelivery>();
            await using (var cmd = Cmd(tx,
                             "WITH due AS (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= @now " +
                             "AND (lease_expires_at IS NULL OR lease_expires_at < @now) ORDER BY next_attempt_at LIMIT @m FOR UPDATE SKIP LOCKED) " +
                             "UPDATE webhook_deliveries d SET lease_owner = @o, lease_expires_at = @exp FROM due WHERE d.id = due.id " +
                             $"RETURNING {string.Join(", ", StoreRows.DeliveryColumns.Split(", ").Select(c => "d." + c))}",
                             Time("now", now), Int("m", max), Text("o", dispatcherId), Time("exp", now + lease)))
            await using (var r = await cmd.ExecuteReaderAsync(ct))
                while (await r.ReadAsync(ct)) list.Add(ReadDelivery(r));
            // RETURNING has no order; keep the due order.
            return (IReadOnlyList<WebhookDelivery>)list.OrderBy(d => d.NextAttemptAt).ThenBy(d => d.Id, StringComparer.Ordinal).ToList();
        }, ct);

    public Task RecordDeliveryRoundAsync(string deliveryId, DeliveryRound round, CancellationToken ct) => OnConnectionAsync(async conn =>
    {
        // One statement: it commits on its own.
        await using var cmd = Cmd(conn, null,
            "UPDATE webhook_deliveries SET status = @s, attempts = attempts + @n, next_attempt_at = COALESCE(@next, next_attempt_at), " +
            "last_status_code = @code, last_error = @err, delivered_at = @del, lease_owner = NULL, lease_expires_at = NULL WHERE id = @id",
            Text("s", StoreRows.Wire(round.Status)), Int("n", round.AttemptsMade), Time("next", round.NextAttemptAt),
            Int("code", round.LastStatusCode), Text("err", round.LastError),
            Time("del", round.Status == DeliveryStatus.Delivered ? round.At : null), Text("id", deliveryId));
        return await cmd.ExecuteNonQueryAsync(ct);
    }, ct);

    public Task<DateTimeOffset?> NextDeliveryDueAsync(CancellationToken ct) => OnConnectionAsync(async conn =>
    {
        var v = await ScalarAsync(conn, null,
            "SELECT MIN(GREATEST(next_attempt_at, COALESCE(lease_expires_at, '-infinity'::timestamptz))) FROM webhook_deliveries WHERE status = 'pending'");
        return v switch
        {
            null => (DateTimeOffset?)null,
            DateTime d => new DateTimeOffset(DateTime.SpecifyKind(d, DateTimeKind.Utc)),
            DateTimeOffset o => o,
            _ => throw new InvalidDataException($"Unexpected timestamp value {v.GetType().Name}."),
        };
    }, ct);
}
