using Npgsql;

namespace OmniConsistency.Api.Storage;

// What owners do with their jobs beyond one job at a time: list them, delete finished ones.
public sealed partial class PostgresJobStore
{
    public Task<IReadOnlyList<JobRecord>> ListAsync(JobListQuery query, CancellationToken ct) => OnConnectionAsync(async conn =>
    {
        var args = new List<NpgsqlParameter> { Text("o", query.Owner), Int("m", query.Limit) };
        var statuses = query.Statuses.Distinct().Select(s => s.ToWire()).ToList();
        if (statuses.Count > 0) args.Add(TextArray("st", statuses));
        if (query.After is { } after) args.AddRange([Time("c", after.CreatedAt), Text("i", after.Id)]);
        // The row comparison on (created_at, id) is an index condition on ix_jobs_owner_created, scanned backwards.
        var sql = $"SELECT {StoreRows.JobColumns("j")}, " +
                  "CASE WHEN j.status = 'queued' THEN (SELECT COUNT(*) FROM jobs q WHERE q.status = 'queued' AND q.seq <= j.seq) END " +
                  "FROM jobs j WHERE j.owner = @o" +
                  (statuses.Count > 0 ? " AND j.status = ANY(@st)" : "") +
                  (query.After is not null ? " AND (j.created_at, j.id) < (@c, @i)" : "") +
                  " ORDER BY j.created_at DESC, j.id DESC LIMIT @m";
        await using var cmd = Cmd(conn, null, sql, [.. args]);
        await using var r = await cmd.ExecuteReaderAsync(ct);
        var list = new List<JobRecord>();
        var position = StoreRows.JobColumnCount;
        while (await r.ReadAsync(ct)) list.Add(ReadJob(r) with { QueuePosition = r.IsDBNull(position) ? null : (int)r.GetInt64(position) });
        return (IReadOnlyList<JobRecord>)list;
    }, ct);

    public Task<DeleteResult> DeleteAsync(string id, string owner, CancellationToken ct) => WriteAsync(async tx =>
    {
        // FOR UPDATE: a claim (SKIP LOCKED) or the retention sweep (SKIP LOCKED) passes this row over while we decide; a
        // completion waits for us. A row the sweep deleted first is no longer found (not found, its files are its own).
        var job = await FindJobAsync(tx.Connection, tx.Transaction, id, forUpdate: true);
        if (job is null || job.Owner != owner) return new DeleteResult(DeleteOutcome.NotFound, null, []);
        if (!job.Status.IsTerminal()) return new DeleteResult(DeleteOutcome.NotFinished, job, []);
        tx.Defer("DELETE FROM job_events WHERE job_id = @id", Text("id", id));
        tx.Defer("DELETE FROM webhook_deliveries WHERE job_id = @id", Text("id", id));
        tx.Defer("DELETE FROM jobs WHERE id = @id", Text("id", id));
        // Open SSE streams and waiters on the job look again and find it gone.
        tx.Notify(PostgresNotifications.JobChanged(id));
        return new DeleteResult(DeleteOutcome.Deleted, job, StoreRows.BlobsOf(job));
    }, ct);
}
