using Npgsql;

namespace OmniConsistency.Api.Storage;

public sealed partial class PostgresJobStore
{
    public Task<EnqueueResult> EnqueueAsync(NewJob job, int capacity, CancellationToken ct) => WriteAsync(async tx =>
    {
        // Enqueues are serialised (per schema) so the capacity count and the idempotency check hold until the insert
        // commits. Lock, key lookup and count go in one round trip.
        string? existingId = null, existingHash = null;
        int queued;
        await using (var batch = new NpgsqlBatch(tx.Connection, tx.Transaction))
        {
            batch.BatchCommands.Add(new NpgsqlBatchCommand("SELECT pg_advisory_xact_lock(hashtext('omni.enqueue.' || current_schema()))"));
            var find = new NpgsqlBatchCommand("SELECT id, request_hash FROM jobs WHERE owner = @o AND idempotency_key = @k");
            find.Parameters.Add(Text("o", job.Owner));
            find.Parameters.Add(Text("k", job.IdempotencyKey));
            batch.BatchCommands.Add(find);
            batch.BatchCommands.Add(new NpgsqlBatchCommand("SELECT COUNT(*) FROM jobs WHERE status = 'queued'"));
            await using var r = await batch.ExecuteReaderAsync(ct);
            await r.NextResultAsync(ct);
            if (await r.ReadAsync(ct)) (existingId, existingHash) = (r.GetString(0), StrOrNull(r, 1));
            await r.NextResultAsync(ct);
            await r.ReadAsync(ct);
            queued = (int)r.GetInt64(0);
        }
        if (existingId is not null)
        {
            var existing = await FindJobAsync(tx.Connection, tx.Transaction, existingId) ?? throw new InvalidOperationException($"Job {existingId} vanished inside a transaction.");
            var sameRequest = existingHash is not null && existingHash == job.RequestHash;
            return new EnqueueResult(sameRequest ? EnqueueOutcome.Replayed : EnqueueOutcome.IdempotencyConflict, existing, 0);
        }
        if (queued >= capacity) return new EnqueueResult(EnqueueOutcome.QueueFull, null, queued);

        var inserted = await JobAsync(tx,
            "INSERT INTO jobs (id, owner, status, parameters, input_blob, idempotency_key, request_hash, webhook_url, webhook_events, base_url, created_at) " +
            $"VALUES (@id, @owner, 'queued', @p, @in, @ik, @rh, @wu, @we, @base, @created) RETURNING {StoreRows.JobColumns()}",
            Text("id", job.Id), Text("owner", job.Owner), Json("p", StoreJson.Write(job.Parameters)), Text("in", job.InputBlob),
            Text("ik", job.IdempotencyKey), Text("rh", job.RequestHash), Text("wu", job.WebhookUrl), TextArray("we", job.WebhookEvents),
            Text("base", job.BaseUrl), Time("created", job.CreatedAt));
        var created = inserted! with { QueuePosition = queued + 1 };
        ApplyEffects(tx, created, JobTransition.Queued, job.CreatedAt);
        tx.Notify(PostgresNotifications.WorkAvailable);
        return new EnqueueResult(EnqueueOutcome.Created, created, queued + 1);
    }, ct);

    public Task<JobRecord?> GetAsync(string id, CancellationToken ct) => OnConnectionAsync(async conn =>
    {
        var job = await FindJobAsync(conn, null, id);
        if (job is not { Status: JobStatus.Queued }) return job;
        var ahead = Convert.ToInt32(await ScalarAsync(conn, null, "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq < @s", Long("s", job.Seq)));
        return job with { QueuePosition = ahead + 1 };
    }, ct);

    public Task<JobRecord?> ClaimNextAsync(string workerId, TimeSpan lease, DateTimeOffset now, CancellationToken ct) => WriteAsync(async tx =>
    {
        // SKIP LOCKED: a row another worker is claiming right now is passed over instead of waited for.
        var job = await JobAsync(tx,
            "WITH next AS (SELECT seq FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) " +
            "UPDATE jobs j SET status = 'running', attempts = j.attempts + 1, lease_owner = @w, lease_expires_at = @exp, started_at = @now, " +
            "queue_wait_ms = GREATEST(0, (EXTRACT(EPOCH FROM (@now - j.created_at)) * 1000)::bigint), " +
            "progress_phase = NULL, progress_step = NULL, progress_total = NULL " +
            $"FROM next WHERE j.seq = next.seq RETURNING {StoreRows.JobColumns("j")}",
            Text("w", workerId), Time("exp", now + lease), Time("now", now));
        if (job is not null) ApplyEffects(tx, job, JobTransition.Started, now);
        return job;
    }, ct);

    public Task<LeaseState> RenewLeaseAsync(string id, string workerId, TimeSpan lease, DateTimeOffset now, CancellationToken ct) => OnConnectionAsync(async conn =>
    {
        // One statement: it commits on its own.
        var cancel = await ScalarAsync(conn, null,
            "UPDATE jobs SET lease_expires_at = @exp WHERE id = @id AND status = 'running' AND lease_owner = @w RETURNING cancel_requested",
            Time("exp", now + lease), Text("id", id), Text("w", workerId));
        return cancel is bool requested ? new LeaseState(true, requested) : new LeaseState(false, false);
    }, ct);

    public Task<bool> ReportProgressAsync(string id, string workerId, JobProgress progress, DateTimeOffset now, CancellationToken ct) => WriteAsync(async tx =>
    {
        var n = await ExecAsync(tx,
            "UPDATE jobs SET progress_phase = @ph, progress_step = @st, progress_total = @tot WHERE id = @id AND status = 'running' AND lease_owner = @w",
            Text("ph", progress.Phase), Int("st", progress.Step), Int("tot", progress.TotalSteps), Text("id", id), Text("w", workerId));
        if (n == 0) return false;
        AppendEvent(tx, id, "progress", StoreJson.Write(new { phase = progress.Phase, step = progress.Step, totalSteps = progress.TotalSteps }), now);
        tx.Notify(PostgresNotifications.JobChanged(id));
        return true;
    }, ct);

    public Task<JobRecord?> CompleteAsync(string id, string workerId, JobCompletion completion, DateTimeOffset now, CancellationToken ct) => WriteAsync(async tx =>
    {
        if (!completion.Status.IsTerminal()) throw new ArgumentException("A completion must be terminal.", nameof(completion));
        var job = await JobAsync(tx,
            "UPDATE jobs SET status = @s, finished_at = @now, lease_owner = NULL, lease_expires_at = NULL, result = @r, error = @e, " +
            $"inference_ms = @ms, result_expires_at = @exp WHERE id = @id AND status = 'running' AND lease_owner = @w RETURNING {StoreRows.JobColumns()}",
            Text("s", completion.Status.ToWire()), Time("now", now),
            Json("r", completion.Result is null ? null : StoreJson.Write(completion.Result)),
            Json("e", completion.Error is null ? null : StoreJson.Write(completion.Error)),
            Long("ms", completion.InferenceMs), Time("exp", now + _storage.ResultRetention), Text("id", id), Text("w", workerId));
        if (job is not null) ApplyEffects(tx, job, StoreRows.TransitionOf(completion.Status), now);
        return job;
    }, ct);

    public Task<bool> ReleaseAsync(string id, string workerId, DateTimeOffset now, CancellationToken ct) => WriteAsync(async tx =>
    {
        var job = await JobAsync(tx,
            "UPDATE jobs SET status = 'queued', attempts = GREATEST(attempts - 1, 0), lease_owner = NULL, lease_expires_at = NULL, " +
            "progress_phase = NULL, progress_step = NULL, progress_total = NULL WHERE id = @id AND status = 'running' AND lease_owner = @w " +
            $"RETURNING {StoreRows.JobColumns()}",
            Text("id", id), Text("w", workerId));
        if (job is null) return false;
        ApplyEffects(tx, job, JobTransition.Requeued, now);
        tx.Notify(PostgresNotifications.WorkAvailable);
        return true;
    }, ct);

    public Task<CancelResult> RequestCancelAsync(string id, DateTimeOffset now, CancellationToken ct) => WriteAsync(async tx =>
    {
        // FOR UPDATE: a claim of this job (SKIP LOCKED) passes it over while we decide.
        var job = await FindJobAsync(tx.Connection, tx.Transaction, id, forUpdate: true);
        if (job is null) return new CancelResult(CancelOutcome.NotFound, null);
        switch (job.Status)
        {
            case JobStatus.Queued:
                var canceled = (await JobAsync(tx,
                    $"UPDATE jobs SET status = 'canceled', finished_at = @now, cancel_requested = true, result_expires_at = @exp WHERE id = @id RETURNING {StoreRows.JobColumns()}",
                    Time("now", now), Time("exp", now + _storage.ResultRetention), Text("id", id)))!;
                ApplyEffects(tx, canceled, JobTransition.Canceled, now);
                return new CancelResult(CancelOutcome.Canceled, canceled);
            case JobStatus.Running:
                var marked = (await JobAsync(tx, $"UPDATE jobs SET cancel_requested = true WHERE id = @id RETURNING {StoreRows.JobColumns()}", Text("id", id)))!;
                // The worker holding the job may be another process: tell it now rather than at its next heartbeat.
                tx.Notify(PostgresNotifications.CancelRequested(id));
                tx.Notify(PostgresNotifications.JobChanged(id));
                return new CancelResult(CancelOutcome.CancelRequested, marked);
            default:
                return new CancelResult(CancelOutcome.AlreadyFinished, job);
        }
    }, ct);

    public Task<int> RecoverAsync(DateTimeOffset now, int maxAttempts, bool includeLiveLeases, CancellationToken ct) => WriteAsync(async tx =>
    {
        // Rows locked by a renewing worker or another recoverer are skipped; they are looked at again next round.
        var stale = await JobsAsync(tx.Connection, tx.Transaction,
            $"SELECT {StoreRows.JobColumns()} FROM jobs WHERE status = 'running' AND (@all OR lease_expires_at IS NULL OR lease_expires_at < @now) " +
            "ORDER BY seq FOR UPDATE SKIP LOCKED",
            Bool("all", includeLiveLeases), Time("now", now));

        var requeued = false;
        foreach (var job in stale)
        {
            JobTransition transition;
            JobRecord? updated;
            if (job.CancelRequested)
            {
                updated = await JobAsync(tx,
                    "UPDATE jobs SET status = 'canceled', finished_at = @now, lease_owner = NULL, lease_expires_at = NULL, result_expires_at = @exp " +
                    $"WHERE id = @id RETURNING {StoreRows.JobColumns()}",
                    Text("id", job.Id), Time("now", now), Time("exp", now + _storage.ResultRetention));
                transition = JobTransition.Canceled;
            }
            else if (job.Attempts >= maxAttempts)
            {
                var error = new JobError("job-interrupted", "The job was interrupted too often",
                    $"The job was started {job.Attempts} times and each attempt was interrupted (service restart or lost worker); it will not be retried.");
                updated = await JobAsync(tx,
                    "UPDATE jobs SET status = 'failed', finished_at = @now, lease_owner = NULL, lease_expires_at = NULL, error = @e, result_expires_at = @exp " +
                    $"WHERE id = @id RETURNING {StoreRows.JobColumns()}",
                    Text("id", job.Id), Time("now", now), Json("e", StoreJson.Write(error)), Time("exp", now + _storage.ResultRetention));
                transition = JobTransition.Failed;
            }
            else
            {
                updated = await JobAsync(tx,
                    "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, progress_phase = NULL, progress_step = NULL, " +
                    $"progress_total = NULL WHERE id = @id RETURNING {StoreRows.JobColumns()}",
                    Text("id", job.Id));
                transition = JobTransition.Requeued;
                requeued = true;
            }
            ApplyEffects(tx, updated!, transition, now);
        }
        if (requeued) tx.Notify(PostgresNotifications.WorkAvailable);
        if (includeLiveLeases)
            tx.Defer("UPDATE webhook_deliveries SET lease_owner = NULL, lease_expires_at = NULL WHERE status = 'pending' AND lease_owner IS NOT NULL");
        return stale.Count;
    }, ct);

    public Task<IReadOnlyList<JobEvent>> GetEventsAsync(string jobId, long afterSeq, int max, CancellationToken ct) => OnConnectionAsync(async conn =>
    {
        var list = new List<JobEvent>();
        await using var cmd = Cmd(conn, null, "SELECT seq, job_id, type, data, created_at FROM job_events WHERE job_id = @j AND seq > @s ORDER BY seq LIMIT @m",
            Text("j", jobId), Long("s", afterSeq), Int("m", max));
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct)) list.Add(new JobEvent(r.GetInt64(0), r.GetString(1), r.GetString(2), r.GetString(3), r.GetFieldValue<DateTimeOffset>(4)));
        return (IReadOnlyList<JobEvent>)list;
    }, ct);

    public Task<JobCounts> GetCountsAsync(CancellationToken ct) => OnConnectionAsync(async conn =>
    {
        var counts = new Dictionary<string, int>();
        await using var cmd = Cmd(conn, null, "SELECT status, COUNT(*) FROM jobs GROUP BY status");
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct)) counts[r.GetString(0)] = (int)r.GetInt64(1);
        int Get(string s) => counts.GetValueOrDefault(s);
        return new JobCounts(Get("queued"), Get("running"), Get("succeeded"), Get("failed"), Get("canceled"));
    }, ct);

    public Task<IReadOnlyList<ExpiredFiles>> ListExpiredResultsAsync(DateTimeOffset now, int max, CancellationToken ct) => OnConnectionAsync(async conn =>
    {
        var list = new List<ExpiredFiles>();
        await using var cmd = Cmd(conn, null,
            "SELECT id, input_blob, result FROM jobs WHERE NOT result_expired AND result_expires_at IS NOT NULL AND result_expires_at < @now LIMIT @m",
            Time("now", now), Int("m", max));
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct)) list.Add(new ExpiredFiles(r.GetString(0), BlobsOf(r.GetString(1), StrOrNull(r, 2))));
        return (IReadOnlyList<ExpiredFiles>)list;
    }, ct);

    private static IReadOnlyList<string> BlobsOf(string inputBlob, string? resultJson) =>
        resultJson is null ? [inputBlob] : [inputBlob, StoreJson.Read<JobResultInfo>(resultJson).Blob];

    public Task MarkResultExpiredAsync(string jobId, CancellationToken ct) => OnConnectionAsync(async conn =>
    {
        await using var cmd = Cmd(conn, null, "UPDATE jobs SET result_expired = true WHERE id = @id", Text("id", jobId));
        return await cmd.ExecuteNonQueryAsync(ct);
    }, ct);

    public Task<IReadOnlyList<ExpiredFiles>> DeleteFinishedJobsAsync(DateTimeOffset finishedBefore, int max, CancellationToken ct) => WriteAsync(async tx =>
    {
        var doomed = new List<ExpiredFiles>();
        await using (var cmd = Cmd(tx,
                         "SELECT id, input_blob, result, result_expired FROM jobs WHERE status IN ('succeeded', 'failed', 'canceled') AND finished_at < @cut " +
                         "LIMIT @m FOR UPDATE SKIP LOCKED",
                         Time("cut", finishedBefore), Int("m", max)))
        await using (var r = await cmd.ExecuteReaderAsync(ct))
            while (await r.ReadAsync(ct)) doomed.Add(new ExpiredFiles(r.GetString(0), r.GetBoolean(3) ? [] : BlobsOf(r.GetString(1), StrOrNull(r, 2))));
        if (doomed.Count == 0) return (IReadOnlyList<ExpiredFiles>)doomed;
        var ids = TextArray("ids", doomed.Select(d => d.JobId));
        await ExecAsync(tx, "DELETE FROM job_events WHERE job_id = ANY(@ids)", ids.Clone());
        await ExecAsync(tx, "DELETE FROM webhook_deliveries WHERE job_id = ANY(@ids) AND status <> 'pending'", ids.Clone());
        await ExecAsync(tx, "DELETE FROM jobs WHERE id = ANY(@ids)", ids);
        return (IReadOnlyList<ExpiredFiles>)doomed;
    }, ct);
}
