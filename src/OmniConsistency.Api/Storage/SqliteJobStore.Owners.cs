namespace OmniConsistency.Api.Storage;

// What owners do with their jobs beyond one job at a time: list them, delete finished ones.
public sealed partial class SqliteJobStore
{
    public Task<IReadOnlyList<JobRecord>> ListAsync(JobListQuery query, CancellationToken ct) => ReadAsync(conn =>
    {
        var args = new List<(string, object?)> { ("$o", query.Owner), ("$m", query.Limit) };
        var statuses = query.Statuses.Distinct().ToList();
        for (var i = 0; i < statuses.Count; i++) args.Add(($"$s{i}", statuses[i].ToWire()));
        if (query.After is { } after) args.AddRange([("$c", Ms(after.CreatedAt)), ("$i", after.Id)]);
        // Row-value comparison on (created_at, id) walks ix_jobs_owner_created backwards from the cursor.
        var sql = $"SELECT {StoreRows.JobColumns("j")}, " +
                  "CASE WHEN j.status = 'queued' THEN (SELECT COUNT(*) FROM jobs q WHERE q.status = 'queued' AND q.seq <= j.seq) END " +
                  "FROM jobs j WHERE j.owner = $o" +
                  (statuses.Count > 0 ? $" AND j.status IN ({string.Join(", ", statuses.Select((_, i) => $"$s{i}"))})" : "") +
                  (query.After is not null ? " AND (j.created_at, j.id) < ($c, $i)" : "") +
                  " ORDER BY j.created_at DESC, j.id DESC LIMIT $m";
        var list = new List<JobRecord>();
        using var cmd = Cmd(conn, null, sql, [.. args]);
        using var r = cmd.ExecuteReader();
        var position = StoreRows.JobColumnCount;
        while (r.Read()) list.Add(ReadJob(r) with { QueuePosition = r.IsDBNull(position) ? null : r.GetInt32(position) });
        return (IReadOnlyList<JobRecord>)list;
    }, ct);

    public Task<DeleteResult> DeleteAsync(string id, string owner, CancellationToken ct) => WriteAsync((conn, tx) =>
    {
        // Under the write lock: the worker's completion and the retention sweep of this job come before or after, never between.
        var job = FindJob(conn, tx, id);
        if (job is null || job.Owner != owner) return new DeleteResult(DeleteOutcome.NotFound, null, []);
        if (!job.Status.IsTerminal()) return new DeleteResult(DeleteOutcome.NotFinished, job, []);
        Exec(conn, tx, "DELETE FROM job_events WHERE job_id = $id", ("$id", id));
        Exec(conn, tx, "DELETE FROM webhook_deliveries WHERE job_id = $id", ("$id", id));
        Exec(conn, tx, "DELETE FROM jobs WHERE id = $id", ("$id", id));
        return new DeleteResult(DeleteOutcome.Deleted, job, StoreRows.BlobsOf(job));
    }, ct);
}
