using Microsoft.Data.Sqlite;

namespace OmniConsistency.Api.Storage;

public sealed partial class SqliteJobStore
{
    public Task<EnqueueResult> EnqueueAsync(NewJob job, int capacity, CancellationToken ct) => WriteAsync((conn, tx) =>
    {
        if (job.IdempotencyKey is not null)
        {
            using var find = Cmd(conn, tx, "SELECT id, request_hash FROM jobs WHERE owner = $o AND idempotency_key = $k",
                ("$o", job.Owner), ("$k", job.IdempotencyKey));
            using var r = find.ExecuteReader();
            if (r.Read())
            {
                var existing = LoadJob(conn, tx, r.GetString(0));
                var sameRequest = !r.IsDBNull(1) && r.GetString(1) == job.RequestHash;
                return new EnqueueResult(sameRequest ? EnqueueOutcome.Replayed : EnqueueOutcome.IdempotencyConflict, existing, 0);
            }
        }

        var queued = Convert.ToInt32(Scalar(conn, tx, "SELECT COUNT(*) FROM jobs WHERE status = 'queued'"));
        if (queued >= capacity) return new EnqueueResult(EnqueueOutcome.QueueFull, null, queued);

        Exec(conn, tx,
            "INSERT INTO jobs (id, owner, status, parameters, input_blob, idempotency_key, request_hash, webhook_url, webhook_events, base_url, created_at) " +
            "VALUES ($id, $owner, 'queued', $p, $in, $ik, $rh, $wu, $we, $base, $created)",
            ("$id", job.Id), ("$owner", job.Owner), ("$p", StoreJson.Write(job.Parameters)), ("$in", job.InputBlob),
            ("$ik", job.IdempotencyKey), ("$rh", job.RequestHash), ("$wu", job.WebhookUrl), ("$we", string.Join(',', job.WebhookEvents)),
            ("$base", job.BaseUrl), ("$created", Ms(job.CreatedAt)));
        var created = LoadJob(conn, tx, job.Id) with { QueuePosition = queued + 1 };
        ApplyEffects(conn, tx, created, JobTransition.Queued, job.CreatedAt);
        return new EnqueueResult(EnqueueOutcome.Created, created, queued + 1);
    }, ct);

    public Task<JobRecord?> GetAsync(string id, CancellationToken ct) => ReadAsync(conn =>
    {
        var job = FindJob(conn, null, id);
        if (job is not { Status: JobStatus.Queued }) return job;
        var ahead = Convert.ToInt32(Scalar(conn, null, "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq < $s", ("$s", job.Seq)));
        return job with { QueuePosition = ahead + 1 };
    }, ct);

    public Task<JobRecord?> ClaimNextAsync(string workerId, TimeSpan lease, DateTimeOffset now, CancellationToken ct) => WriteAsync((conn, tx) =>
    {
        var id = (string?)Scalar(conn, tx, "SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1");
        if (id is null) return null;
        Exec(conn, tx,
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $w, lease_expires_at = $exp, " +
            "started_at = $now, queue_wait_ms = $now - created_at, progress_phase = NULL, progress_step = NULL, progress_total = NULL " +
            "WHERE id = $id",
            ("$w", workerId), ("$exp", Ms(now + lease)), ("$now", Ms(now)), ("$id", id));
        var job = LoadJob(conn, tx, id);
        ApplyEffects(conn, tx, job, JobTransition.Started, now);
        return (JobRecord?)job;
    }, ct);

    public Task<LeaseState> RenewLeaseAsync(string id, string workerId, TimeSpan lease, DateTimeOffset now, CancellationToken ct) => WriteAsync((conn, tx) =>
    {
        var n = Exec(conn, tx, "UPDATE jobs SET lease_expires_at = $exp WHERE id = $id AND status = 'running' AND lease_owner = $w",
            ("$exp", Ms(now + lease)), ("$id", id), ("$w", workerId));
        if (n == 0) return new LeaseState(false, false);
        var cancel = Convert.ToInt64(Scalar(conn, tx, "SELECT cancel_requested FROM jobs WHERE id = $id", ("$id", id))) != 0;
        return new LeaseState(true, cancel);
    }, ct);

    public Task<bool> ReportProgressAsync(string id, string workerId, JobProgress progress, DateTimeOffset now, CancellationToken ct) => WriteAsync((conn, tx) =>
    {
        var n = Exec(conn, tx,
            "UPDATE jobs SET progress_phase = $ph, progress_step = $st, progress_total = $tot WHERE id = $id AND status = 'running' AND lease_owner = $w",
            ("$ph", progress.Phase), ("$st", progress.Step), ("$tot", progress.TotalSteps), ("$id", id), ("$w", workerId));
        if (n == 0) return false;
        AppendEvent(conn, tx, id, "progress", StoreJson.Write(new { phase = progress.Phase, step = progress.Step, totalSteps = progress.TotalSteps }), now);
        return true;
    }, ct);

    public Task<JobRecord?> CompleteAsync(string id, string workerId, JobCompletion completion, DateTimeOffset now, CancellationToken ct) => WriteAsync((conn, tx) =>
    {
        if (!completion.Status.IsTerminal()) throw new ArgumentException("A completion must be terminal.", nameof(completion));
        var n = Exec(conn, tx,
            "UPDATE jobs SET status = $s, finished_at = $now, lease_owner = NULL, lease_expires_at = NULL, result = $r, error = $e, " +
            "inference_ms = $ms, result_expires_at = $exp WHERE id = $id AND status = 'running' AND lease_owner = $w",
            ("$s", completion.Status.ToWire()), ("$now", Ms(now)),
            ("$r", completion.Result is null ? null : StoreJson.Write(completion.Result)),
            ("$e", completion.Error is null ? null : StoreJson.Write(completion.Error)),
            ("$ms", completion.InferenceMs), ("$exp", Ms(now + _storage.ResultRetention)), ("$id", id), ("$w", workerId));
        if (n == 0) return null;
        var job = LoadJob(conn, tx, id);
        ApplyEffects(conn, tx, job, StoreRows.TransitionOf(completion.Status), now);
        return (JobRecord?)job;
    }, ct);

    public Task<bool> ReleaseAsync(string id, string workerId, DateTimeOffset now, CancellationToken ct) => WriteAsync((conn, tx) =>
    {
        var n = Exec(conn, tx,
            "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0), lease_owner = NULL, lease_expires_at = NULL, " +
            "progress_phase = NULL, progress_step = NULL, progress_total = NULL WHERE id = $id AND status = 'running' AND lease_owner = $w",
            ("$id", id), ("$w", workerId));
        if (n == 0) return false;
        ApplyEffects(conn, tx, LoadJob(conn, tx, id), JobTransition.Requeued, now);
        return true;
    }, ct);

    public Task<CancelResult> RequestCancelAsync(string id, DateTimeOffset now, CancellationToken ct) => WriteAsync((conn, tx) =>
    {
        var job = FindJob(conn, tx, id);
        if (job is null) return new CancelResult(CancelOutcome.NotFound, null);
        switch (job.Status)
        {
            case JobStatus.Queued:
                Exec(conn, tx,
                    "UPDATE jobs SET status = 'canceled', finished_at = $now, cancel_requested = 1, result_expires_at = $exp WHERE id = $id",
                    ("$now", Ms(now)), ("$exp", Ms(now + _storage.ResultRetention)), ("$id", id));
                var canceled = LoadJob(conn, tx, id);
                ApplyEffects(conn, tx, canceled, JobTransition.Canceled, now);
                return new CancelResult(CancelOutcome.Canceled, canceled);
            case JobStatus.Running:
                Exec(conn, tx, "UPDATE jobs SET cancel_requested = 1 WHERE id = $id", ("$id", id));
                return new CancelResult(CancelOutcome.CancelRequested, LoadJob(conn, tx, id));
            default:
                return new CancelResult(CancelOutcome.AlreadyFinished, job);
        }
    }, ct);

    public Task<int> RecoverAsync(DateTimeOffset now, int maxAttempts, bool includeLiveLeases, CancellationToken ct) => WriteAsync((conn, tx) =>
    {
        var stale = new List<string>();
        using (var cmd = Cmd(conn, tx, "SELECT id FROM jobs WHERE status = 'running' AND ($all = 1 OR lease_expires_at IS NULL OR lease_expires_at < $now) ORDER BY seq",
                   ("$all", includeLiveLeases ? 1 : 0), ("$now", Ms(now))))
        using (var r = cmd.ExecuteReader())
            while (r.Read()) stale.Add(r.GetString(0));

        foreach (var id in stale)
        {
            var job = LoadJob(conn, tx, id);
            JobTransition transition;
            if (job.CancelRequested)
            {
                Exec(conn, tx, "UPDATE jobs SET status = 'canceled', finished_at = $now, lease_owner = NULL, lease_expires_at = NULL, result_expires_at = $exp WHERE id = $id",
                    ("$now", Ms(now)), ("$exp", Ms(now + _storage.ResultRetention)), ("$id", id));
                transition = JobTransition.Canceled;
            }
            else if (job.Attempts >= maxAttempts)
            {
                var error = new JobError("job-interrupted", "The job was interrupted too often",
                    $"The job was started {job.Attempts} times and each attempt was interrupted (service restart or lost worker); it will not be retried.");
                Exec(conn, tx, "UPDATE jobs SET status = 'failed', finished_at = $now, lease_owner = NULL, lease_expires_at = NULL, error = $e, result_expires_at = $exp WHERE id = $id",
                    ("$now", Ms(now)), ("$e", StoreJson.Write(error)), ("$exp", Ms(now + _storage.ResultRetention)), ("$id", id));
                transition = JobTransition.Failed;
            }
            else
            {
                Exec(conn, tx, "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, progress_phase = NULL, progress_step = NULL, progress_total = NULL WHERE id = $id",
                    ("$id", id));
                transition = JobTransition.Requeued;
            }
            ApplyEffects(conn, tx, LoadJob(conn, tx, id), transition, now);
        }
        if (includeLiveLeases)
            Exec(conn, tx, "UPDATE webhook_deliveries SET lease_owner = NULL, lease_expires_at = NULL WHERE status = 'pending' AND lease_owner IS NOT NULL");
        return stale.Count;
    }, ct);

    public Task<IReadOnlyList<JobEvent>> GetEventsAsync(string jobId, long afterSeq, int max, CancellationToken ct) => ReadAsync(conn =>
    {
        var list = new List<JobEvent>();
        using var cmd = Cmd(conn, null, "SELECT seq, job_id, type, data, created_at FROM job_events WHERE job_id = $j AND seq > $s ORDER BY seq LIMIT $m",
            ("$j", jobId), ("$s", afterSeq), ("$m", max));
        using var r = cmd.ExecuteReader();
        while (r.Read()) list.Add(new JobEvent(r.GetInt64(0), r.GetString(1), r.GetString(2), r.GetString(3), At(r.GetInt64(4))));
        return (IReadOnlyList<JobEvent>)list;
    }, ct);

    public Task<JobCounts> GetCountsAsync(CancellationToken ct) => ReadAsync(conn =>
    {
        var counts = new Dictionary<string, int>();
        using var cmd = Cmd(conn, null, "SELECT status, COUNT(*) FROM jobs GROUP BY status");
        using var r = cmd.ExecuteReader();
        while (r.Read()) counts[r.GetString(0)] = r.GetInt32(1);
        int Get(string s) => counts.GetValueOrDefault(s);
        return new JobCounts(Get("queued"), Get("running"), Get("succeeded"), Get("failed"), Get("canceled"));
    }, ct);

    public Task<IReadOnlyList<ExpiredFiles>> ListExpiredResultsAsync(DateTimeOffset now, int max, CancellationToken ct) => ReadAsync(conn =>
    {
        var list = new List<ExpiredFiles>();
        using var cmd = Cmd(conn, null,
            "SELECT id, input_blob, result FROM jobs WHERE result_expired = 0 AND result_expires_at IS NOT NULL AND result_expires_at < $now LIMIT $m",
            ("$now", Ms(now)), ("$m", max));
        using var r = cmd.ExecuteReader();
        while (r.Read()) list.Add(new ExpiredFiles(r.GetString(0), BlobsOf(r.GetString(1), StrOrNull(r, 2))));
        return (IReadOnlyList<ExpiredFiles>)list;
    }, ct);

    private static IReadOnlyList<string> BlobsOf(string inputBlob, string? resultJson) =>
        resultJson is null ? [inputBlob] : [inputBlob, StoreJson.Read<JobResultInfo>(resultJson).Blob];

    public Task MarkResultExpiredAsync(string jobId, CancellationToken ct) => WriteAsync((conn, tx) =>
        Exec(conn, tx, "UPDATE jobs SET result_expired = 1 WHERE id = $id", ("$id", jobId)), ct);

    public Task<IReadOnlyList<ExpiredFiles>> DeleteFinishedJobsAsync(DateTimeOffset finishedBefore, int max, CancellationToken ct) => WriteAsync((conn, tx) =>
    {
        var doomed = new List<ExpiredFiles>();
        using (var cmd = Cmd(conn, tx,
                   "SELECT id, input_blob, result, result_expired FROM jobs WHERE status IN ('succeeded','failed','canceled') AND finished_at < $cut LIMIT $m",
                   ("$cut", Ms(finishedBefore)), ("$m", max)))
        using (var r = cmd.ExecuteReader())
            while (r.Read()) doomed.Add(new ExpiredFiles(r.GetString(0), r.GetInt64(3) != 0 ? [] : BlobsOf(r.GetString(1), StrOrNull(r, 2))));
        foreach (var d in doomed)
        {
            Exec(conn, tx, "DELETE FROM job_events WHERE job_id = $id", ("$id", d.JobId));
            Exec(conn, tx, "DELETE FROM webhook_deliveries WHERE job_id = $id AND status <> 'pending'", ("$id", d.JobId));
            Exec(conn, tx, "DELETE FROM jobs WHERE id = $id", ("$id", d.JobId));
        }
        return (IReadOnlyList<ExpiredFiles>)doomed;
    }, ct);
}
