using Microsoft.Extensions.Options;
using OmniConsistency.Api.Endpoints;
using OmniConsistency.Api.Observability;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Storage;

namespace OmniConsistency.Api.Jobs;

public sealed record SubmitOutcome(JobRecord Job, bool Replayed);

/// <summary>What the endpoints do with jobs: submit, read and list (per owner), cancel, delete, wait. The store keeps the state.</summary>
public sealed class JobService(
    IJobStore store,
    IBlobStore blobs,
    JobSignals signals,
    RunningJobs running,
    ServiceMetrics metrics,
    IOptions<QueueOptions> queueOptions,
    IOptions<WorkerOptions> workerOptions,
    TimeProvider time,
    ILogger<JobService> logger)
{
    private readonly QueueOptions _queue = queueOptions.Value;

    public async Task<SubmitOutcome> SubmitAsync(ValidatedSubmission submission, string owner, string? idempotencyKey, string baseUrl, CancellationToken ct)
    {
        var id = Guid.CreateVersion7().ToString("N");
        var inputBlob = $"inputs/{id}";
        await blobs.WriteAsync(inputBlob, submission.Image, ct);
        EnqueueResult result;
        try
        {
            result = await store.EnqueueAsync(new NewJob
            {
                Id = id, Owner = owner, Parameters = submission.Parameters, InputBlob = inputBlob,
                IdempotencyKey = idempotencyKey, RequestHash = submission.RequestHash,
                WebhookUrl = submission.WebhookUrl, WebhookEvents = submission.WebhookEvents,
                BaseUrl = baseUrl, CreatedAt = time.GetUtcNow(),
            }, _queue.Capacity, ct);
        }
        catch
        {
            await blobs.DeleteAsync(inputBlob, CancellationToken.None);
            throw;
        }
        if (result.Outcome != EnqueueOutcome.Created) await blobs.DeleteAsync(inputBlob, CancellationToken.None);

        switch (result.Outcome)
        {
            case EnqueueOutcome.Created:
                signals.WorkAvailable();
                using (Serilog.Context.LogContext.PushProperty("JobId", id))
                    logger.LogInformation("Job {JobId} queued at position {Position} for {Owner}", id, result.QueuedCount, owner == "" ? "(open)" : owner);
                return new SubmitOutcome(result.Job!, false);
            case EnqueueOutcome.Replayed:
                return new SubmitOutcome((await store.GetAsync(result.Job!.Id, ct))!, true);
            case EnqueueOutcome.IdempotencyConflict:
                metrics.Rejected("idempotency-conflict");
                throw new ApiProblemException(422, "idempotency-key-reused", "Idempotency-Key reused",
                    $"The Idempotency-Key was already used for job {result.Job!.Id} with a different request body.");
            default:
                metrics.Rejected("queue-full");
                var retryAfter = EstimateRetryAfter();
                throw new ApiProblemException(429, "queue-full", "Queue full",
                    $"{result.QueuedCount} jobs are waiting (capacity {_queue.Capacity}); retry in about {(int)retryAfter.TotalSeconds} s.",
                    retryAfter: retryAfter);
        }
    }

    /// <summary>How long until a queue slot frees: one job's mean time over the worker slots, else the configured default.</summary>
    private TimeSpan EstimateRetryAfter()
    {
        var seconds = metrics.MeanInferenceTime is { } mean
            ? mean.TotalSeconds / Math.Max(1, workerOptions.Value.Concurrency)
            : _queue.DefaultRetryAfterSeconds;
        return TimeSpan.FromSeconds(Math.Clamp(Math.Ceiling(seconds), 1, 3600));
    }

    /// <summary>The job when it exists and belongs to <paramref name="owner"/>; another owner's job is "not found".</summary>
    public async Task<JobRecord?> GetAsync(string id, string owner, CancellationToken ct)
    {
        if (!IsWellFormedId(id)) return null;
        var job = await store.GetAsync(id, ct);
        return job is not null && job.Owner == owner ? job : null;
    }

    public static bool IsWellFormedId(string id) => id.Length is > 0 and <= 64 && id.All(char.IsAsciiLetterOrDigit);

    /// <summary>
    /// One page of the owner's jobs, newest first, and the cursor of the next page (null on the last). One row more
    /// than the page is read to tell whether there is a next page, so the last page never links to an empty one.
    /// </summary>
    public async Task<(IReadOnlyList<JobRecord> Jobs, JobListCursor? Next)> ListAsync(string owner, IReadOnlyCollection<JobStatus> statuses,
        JobListCursor? after, int limit, CancellationToken ct)
    {
        var rows = await store.ListAsync(new JobListQuery(owner, statuses, after, limit + 1), ct);
        if (rows.Count <= limit) return (rows, null);
        var page = rows.Take(limit).ToList();
        return (page, new JobListCursor(page[^1].CreatedAt, page[^1].Id));
    }

    /// <summary>
    /// Deletes the owner's finished job: its row, events and webhook deliveries in the store's transaction, then its
    /// files. Files go after the commit, so a failure in between leaves at worst an orphaned file, never a job whose
    /// result is missing; each file is deleted even when the client goes away meanwhile.
    /// </summary>
    public async Task<DeleteResult> DeleteAsync(string id, string owner, CancellationToken ct)
    {
        if (!IsWellFormedId(id)) return new DeleteResult(DeleteOutcome.NotFound, null, []);
        var result = await store.DeleteAsync(id, owner, ct);
        if (result.Outcome != DeleteOutcome.Deleted) return result;
        var deleted = 0;
        foreach (var blob in result.Blobs)
        {
            try
            {
                await blobs.DeleteAsync(blob, CancellationToken.None);
                deleted++;
            }
            catch (Exception ex)
            {
                logger.LogWarning(ex, "Job {JobId} deleted but its file {Blob} could not be deleted", id, blob);
            }
        }
        signals.JobChanged(id);
        metrics.JobDeleted();
        using (Serilog.Context.LogContext.PushProperty("JobId", id))
            logger.LogInformation("Job {JobId} ({Status}) deleted by {Owner}: {Files} file(s) removed", id, result.Job!.Status.ToWire(),
                owner == "" ? "(open)" : owner, deleted);
        return result;
    }

    public Task<IReadOnlyList<WebhookDelivery>> GetDeliveriesAsync(string id, CancellationToken ct) => store.GetDeliveriesAsync(id, ct);

    public async Task<CancelResult> CancelAsync(string id, string owner, CancellationToken ct)
    {
        if (await GetAsync(id, owner, ct) is null) return new CancelResult(CancelOutcome.NotFound, null);
        var result = await store.RequestCancelAsync(id, time.GetUtcNow(), ct);
        if (result.Outcome == CancelOutcome.CancelRequested) running.TryCancel(id);
        if (result.Outcome is CancelOutcome.Canceled or CancelOutcome.CancelRequested)
        {
            signals.JobChanged(id);
            logger.LogInformation("Job {JobId} cancel requested ({Outcome})", id, result.Outcome);
        }
        return result;
    }

    /// <summary>Waits until the job finishes or the timeout passes; returns its latest state.</summary>
    public async Task<JobRecord> WaitForCompletionAsync(JobRecord job, TimeSpan timeout, CancellationToken ct)
    {
        var deadline = time.GetUtcNow() + timeout;
        while (!job.Status.IsTerminal())
        {
            var left = deadline - time.GetUtcNow();
            if (left <= TimeSpan.Zero) break;
            await signals.WaitForJobChangeAsync(job.Id, left < _queue.PollInterval ? left : _queue.PollInterval, ct);
            job = await store.GetAsync(job.Id, ct) ?? job;
        }
        return job;
    }
}
