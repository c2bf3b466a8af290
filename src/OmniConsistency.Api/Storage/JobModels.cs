using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Storage;

public enum JobStatus { Queued, Running, Succeeded, Failed, Canceled }

public static class JobStatusNames
{
    public static string ToWire(this JobStatus s) => s switch
    {
        JobStatus.Queued => "queued",
        JobStatus.Running => "running",
        JobStatus.Succeeded => "succeeded",
        JobStatus.Failed => "failed",
        JobStatus.Canceled => "canceled",
        _ => throw new ArgumentOutOfRangeException(nameof(s)),
    };

    public static JobStatus Parse(string s) => s switch
    {
        "queued" => JobStatus.Queued,
        "running" => JobStatus.Running,
        "succeeded" => JobStatus.Succeeded,
        "failed" => JobStatus.Failed,
        "canceled" => JobStatus.Canceled,
        _ => throw new InvalidDataException($"Unknown job status '{s}' in the job store."),
    };

    public static bool IsTerminal(this JobStatus s) => s is JobStatus.Succeeded or JobStatus.Failed or JobStatus.Canceled;
}

public sealed record NewJob
{
    public required string Id { get; init; }
    /// <summary>The API key name that owns the job ("" when the service runs open).</summary>
    public required string Owner { get; init; }
    /// <summary>What the client asked for, validated and with the seed fixed; stored as JSON with the job.</summary>
    public required StylizationSettings Parameters { get; init; }
    public required string InputBlob { get; init; }
    public string? IdempotencyKey { get; init; }
    public string? RequestHash { get; init; }
    public string? WebhookUrl { get; init; }
    public IReadOnlyList<string> WebhookEvents { get; init; } = [];
    /// <summary>Base URL links in webhook payloads are built from.</summary>
    public required string BaseUrl { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
}

public sealed record JobProgress(string Phase, int Step, int TotalSteps);

public sealed record JobResultInfo(
    string Blob, string ContentType, int Width, int Height, long Bytes, string ETag,
    string EffectivePrompt, IReadOnlyList<string> Warnings);

/// <summary>Why a job failed, as a problem type slug (see ProblemTypes), a title and a detail.</summary>
public sealed record JobError(string Type, string Title, string Detail);

public sealed record JobRecord
{
    public required string Id { get; init; }
    public long Seq { get; init; }
    public required string Owner { get; init; }
    public JobStatus Status { get; init; }
    /// <summary>What the client asked for, validated and with the seed fixed; stored as JSON with the job.</summary>
    public required StylizationSettings Parameters { get; init; }
    public required string InputBlob { get; init; }
    public string? WebhookUrl { get; init; }
    public IReadOnlyList<string> WebhookEvents { get; init; } = [];
    public required string BaseUrl { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset? StartedAt { get; init; }
    public DateTimeOffset? FinishedAt { get; init; }
    public int Attempts { get; init; }
    public string? LeaseOwner { get; init; }
    public DateTimeOffset? LeaseExpiresAt { get; init; }
    public bool CancelRequested { get; init; }
    public JobProgress? Progress { get; init; }
    public JobResultInfo? Result { get; init; }
    /// <summary>When the result (and the input) files are deleted; set when the job finishes.</summary>
    public DateTimeOffset? ResultExpiresAt { get; init; }
    public bool ResultExpired { get; init; }
    public JobError? Error { get; init; }
    public long? QueueWaitMs { get; init; }
    public long? InferenceMs { get; init; }
    /// <summary>1-based place in the queue; only set for queued jobs read through <see cref="IJobStore.GetAsync"/>.</summary>
    public int? QueuePosition { get; init; }
}

public sealed record JobCompletion(JobStatus Status, JobResultInfo? Result, JobError? Error, long? InferenceMs);

public enum EnqueueOutcome { Created, Replayed, IdempotencyConflict, QueueFull }

public sealed record EnqueueResult(EnqueueOutcome Outcome, JobRecord? Job, int QueuedCount);

public enum CancelOutcome { NotFound, Canceled, CancelRequested, AlreadyFinished }

public sealed record CancelResult(CancelOutcome Outcome, JobRecord? Job);

/// <summary>Heartbeat answer: whether the lease is still ours and whether a cancel was asked for.</summary>
public sealed record LeaseState(bool Held, bool CancelRequested);

public sealed record JobEvent(long Seq, string JobId, string Type, string Data, DateTimeOffset CreatedAt);

public sealed record JobCounts(int Queued, int Running, int Succeeded, int Failed, int Canceled);

/// <summary>A job whose result (or input) files are due for deletion.</summary>
public sealed record ExpiredFiles(string JobId, IReadOnlyList<string> Blobs);

public enum DeliveryStatus { Pending, Delivered, Failed }

public sealed record OutboxMessage(string Id, string JobId, string EventType, string Url, string Payload, DateTimeOffset CreatedAt);

public sealed record WebhookDelivery
{
    public required string Id { get; init; }
    public required string JobId { get; init; }
    public required string EventType { get; init; }
    public required string Url { get; init; }
    public required string Payload { get; init; }
    public DeliveryStatus Status { get; init; }
    public int Attempts { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset NextAttemptAt { get; init; }
    public int? LastStatusCode { get; init; }
    public string? LastError { get; init; }
    public DateTimeOffset? DeliveredAt { get; init; }
}

/// <summary>The result of one delivery round: delivered, retry at a time, or given up.</summary>
public sealed record DeliveryRound(DeliveryStatus Status, int AttemptsMade, DateTimeOffset? NextAttemptAt, int? LastStatusCode, string? LastError, DateTimeOffset At);

/// <summary>The job transitions that produce an SSE event and, when the job subscribed, a webhook.</summary>
public enum JobTransition { Queued, Started, Requeued, Succeeded, Failed, Canceled }

/// <summary>What a transition writes besides the job row, in the same transaction.</summary>
public sealed record JobTransitionEffects(string EventType, string EventData, IReadOnlyList<OutboxMessage> Webhooks);

/// <summary>
/// Computes the SSE event and webhook messages of a transition. The store calls it inside its transaction with the
/// job as it is after the transition, so the event log, the outbox and the job row never disagree.
/// </summary>
public interface IJobTransitionEffects
{
    JobTransitionEffects For(JobRecord job, JobTransition transition, DateTimeOffset now);
}
