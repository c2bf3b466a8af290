namespace OmniConsistency.Api.Storage;

/// <summary>
/// The durable job queue, event log and webhook outbox. SQLite is the embedded implementation; a PostgreSQL one
/// (FOR UPDATE SKIP LOCKED claims, LISTEN/NOTIFY) implements the same contract. Every state change is one
/// transaction that also writes its SSE event and webhook messages (see <see cref="IJobTransitionEffects"/>).
/// Methods taking a worker id only act while that worker holds the job's lease, so a worker that lost its lease
/// (the job was re-queued) cannot overwrite the new attempt.
/// </summary>
public interface IJobStore
{
    /// <summary>
    /// True when no other process can hold a lease (the embedded store): at start every running job is then re-queued
    /// at once instead of when its lease expires.
    /// </summary>
    bool ExclusiveToThisProcess { get; }

    /// <summary>Creates or migrates the schema.</summary>
    Task InitializeAsync(CancellationToken ct);

    /// <summary>
    /// Adds a queued job unless the owner already used the idempotency key (same request hash: the existing job is
    /// returned as <see cref="EnqueueOutcome.Replayed"/>; another hash: <see cref="EnqueueOutcome.IdempotencyConflict"/>)
    /// or <paramref name="capacity"/> jobs are already queued. Capacity and key checks are atomic with the insert.
    /// </summary>
    Task<EnqueueResult> EnqueueAsync(NewJob job, int capacity, CancellationToken ct);

    /// <summary>The job with its queue position when queued; null when unknown.</summary>
    Task<JobRecord?> GetAsync(string id, CancellationToken ct);

    /// <summary>
    /// The owner's jobs newest first (created_at, then id, both descending), keyset-paged: only those strictly after
    /// <see cref="JobListQuery.After"/>, in <see cref="JobListQuery.Statuses"/> when given, at most
    /// <see cref="JobListQuery.Limit"/>. Queued jobs carry their queue position, as from <see cref="GetAsync"/>.
    /// </summary>
    Task<IReadOnlyList<JobRecord>> ListAsync(JobListQuery query, CancellationToken ct);

    /// <summary>
    /// Deletes the owner's finished job with its events and webhook deliveries (pending ones too) in one transaction.
    /// A queued or running job is left as it is (<see cref="DeleteOutcome.NotFinished"/>): the worker may hold it. The
    /// job's files are returned, not deleted: the caller deletes them after the commit (a missing file is no error).
    /// </summary>
    Task<DeleteResult> DeleteAsync(string id, string owner, CancellationToken ct);

    /// <summary>Takes the oldest queued job for <paramref name="workerId"/>: running, attempts + 1, leased until now + lease.</summary>
    Task<JobRecord?> ClaimNextAsync(string workerId, TimeSpan lease, DateTimeOffset now, CancellationToken ct);

    /// <summary>Extends the lease; tells whether it is still held and whether cancellation was requested.</summary>
    Task<LeaseState> RenewLeaseAsync(string id, string workerId, TimeSpan lease, DateTimeOffset now, CancellationToken ct);

    /// <summary>Records step progress (job row + a "progress" event). False when the lease is no longer held.</summary>
    Task<bool> ReportProgressAsync(string id, string workerId, JobProgress progress, DateTimeOffset now, CancellationToken ct);

    /// <summary>Finishes a running job. Null when the lease is no longer held (nothing written).</summary>
    Task<JobRecord?> CompleteAsync(string id, string workerId, JobCompletion completion, DateTimeOffset now, CancellationToken ct);

    /// <summary>Gives a running job back to the queue on orderly shutdown; the attempt is not counted.</summary>
    Task<bool> ReleaseAsync(string id, string workerId, DateTimeOffset now, CancellationToken ct);

    /// <summary>Cancels a queued job at once; marks a running one for cancellation (its worker stops between steps).</summary>
    Task<CancelResult> RequestCancelAsync(string id, DateTimeOffset now, CancellationToken ct);

    /// <summary>
    /// Re-queues running jobs whose lease expired (all running jobs when <paramref name="includeLiveLeases"/>, for a
    /// single-process store at start, where no other worker can hold one; webhook delivery leases are then released
    /// too). A job that already had
    /// <paramref name="maxAttempts"/> attempts fails instead. Returns how many jobs were touched.
    /// </summary>
    Task<int> RecoverAsync(DateTimeOffset now, int maxAttempts, bool includeLiveLeases, CancellationToken ct);

    /// <summary>Events of a job after <paramref name="afterSeq"/>, oldest first.</summary>
    Task<IReadOnlyList<JobEvent>> GetEventsAsync(string jobId, long afterSeq, int max, CancellationToken ct);

    Task<JobCounts> GetCountsAsync(CancellationToken ct);

    Task<IReadOnlyList<WebhookDelivery>> GetDeliveriesAsync(string jobId, CancellationToken ct);

    /// <summary>Leases up to <paramref name="max"/> pending deliveries that are due, so one dispatcher sends each.</summary>
    Task<IReadOnlyList<WebhookDelivery>> ClaimDueDeliveriesAsync(string dispatcherId, DateTimeOffset now, int max, TimeSpan lease, CancellationToken ct);

    /// <summary>Records a delivery round and releases the delivery's lease.</summary>
    Task RecordDeliveryRoundAsync(string deliveryId, DeliveryRound round, CancellationToken ct);

    /// <summary>Finished jobs whose result expired (before <paramref name="now"/>) and whose files are not yet deleted.</summary>
    Task<IReadOnlyList<ExpiredFiles>> ListExpiredResultsAsync(DateTimeOffset now, int max, CancellationToken ct);

    Task MarkResultExpiredAsync(string jobId, CancellationToken ct);

    /// <summary>Deletes finished jobs (with their events and deliveries) that finished before the cutoff; returns their remaining blobs.</summary>
    Task<IReadOnlyList<ExpiredFiles>> DeleteFinishedJobsAsync(DateTimeOffset finishedBefore, int max, CancellationToken ct);
}
