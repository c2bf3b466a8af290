using OmniConsistency.Inference.Pipelines;
using System.Data.Common;

namespace OmniConsistency.Api.Storage;

/// <summary>
/// Row mapping shared by the SQLite and PostgreSQL job stores: both select the same columns in the same order; only
/// how a timestamp, a flag and a string list are stored differs, and each store supplies those readers.
/// </summary>
internal sealed class StoreRows(
    Func<DbDataReader, int, DateTimeOffset> timestamp,
    Func<DbDataReader, int, bool> flag,
    Func<DbDataReader, int, string[]> list)
{
    private static readonly string[] JobColumnNames =
    [
        "id", "seq", "owner", "status", "parameters", "input_blob", "webhook_url", "webhook_events", "base_url", "created_at", "started_at",
        "finished_at", "attempts", "lease_owner", "lease_expires_at", "cancel_requested", "progress_phase", "progress_step", "progress_total",
        "result", "result_expired", "error", "queue_wait_ms", "inference_ms", "result_expires_at",
    ];

    /// <summary>How many columns <see cref="JobColumns"/> names: a query's extra columns start at this index.</summary>
    public static int JobColumnCount => JobColumnNames.Length;

    /// <summary>The files a job still has: its input, and its result when it has one (none once the retention sweep took them).</summary>
    public static IReadOnlyList<string> BlobsOf(JobRecord job) =>
        job.ResultExpired ? [] : job.Result is { } result ? [job.InputBlob, result.Blob] : [job.InputBlob];

    public const string DeliveryColumns =
        "id, job_id, event_type, url, payload, status, attempts, created_at, next_attempt_at, last_status_code, last_error, delivered_at";

    /// <summary>The columns <see cref="Job"/> reads, in its order (qualified with <paramref name="alias"/> where a join makes names ambiguous).</summary>
    public static string JobColumns(string? alias = null) => string.Join(", ", JobColumnNames.Select(c => alias is null ? c : alias + "." + c));

    public static string? StrOrNull(DbDataReader r, int i) => r.IsDBNull(i) ? null : r.GetString(i);
    private static long? LongOrNull(DbDataReader r, int i) => r.IsDBNull(i) ? null : r.GetInt64(i);
    private DateTimeOffset? TimestampOrNull(DbDataReader r, int i) => r.IsDBNull(i) ? null : timestamp(r, i);

    public JobRecord Job(DbDataReader r) => new()
    {
        Id = r.GetString(0),
        Seq = r.GetInt64(1),
        Owner = r.GetString(2),
        Status = JobStatusNames.Parse(r.GetString(3)),
        Parameters = StoreJson.Read<StylizationSettings>(r.GetString(4)),
        InputBlob = r.GetString(5),
        WebhookUrl = StrOrNull(r, 6),
        WebhookEvents = list(r, 7),
        BaseUrl = r.GetString(8),
        CreatedAt = timestamp(r, 9),
        StartedAt = TimestampOrNull(r, 10),
        FinishedAt = TimestampOrNull(r, 11),
        Attempts = r.GetInt32(12),
        LeaseOwner = StrOrNull(r, 13),
        LeaseExpiresAt = TimestampOrNull(r, 14),
        CancelRequested = flag(r, 15),
        Progress = r.IsDBNull(16) ? null : new JobProgress(r.GetString(16), r.GetInt32(17), r.GetInt32(18)),
        Result = r.IsDBNull(19) ? null : StoreJson.Read<JobResultInfo>(r.GetString(19)),
        ResultExpired = flag(r, 20),
        Error = r.IsDBNull(21) ? null : StoreJson.Read<JobError>(r.GetString(21)),
        QueueWaitMs = LongOrNull(r, 22),
        InferenceMs = LongOrNull(r, 23),
        ResultExpiresAt = TimestampOrNull(r, 24),
    };

    public WebhookDelivery Delivery(DbDataReader r) => new()
    {
        Id = r.GetString(0),
        JobId = r.GetString(1),
        EventType = r.GetString(2),
        Url = r.GetString(3),
        Payload = r.GetString(4),
        Status = r.GetString(5) switch
        {
            "pending" => DeliveryStatus.Pending,
            "delivered" => DeliveryStatus.Delivered,
            "failed" => DeliveryStatus.Failed,
            var s => throw new InvalidDataException($"Unknown delivery status '{s}'."),
        },
        Attempts = r.GetInt32(6),
        CreatedAt = timestamp(r, 7),
        NextAttemptAt = timestamp(r, 8),
        LastStatusCode = r.IsDBNull(9) ? null : r.GetInt32(9),
        LastError = StrOrNull(r, 10),
        DeliveredAt = TimestampOrNull(r, 11),
    };

    public static string Wire(DeliveryStatus s) => s switch
    {
        DeliveryStatus.Pending => "pending",
        DeliveryStatus.Delivered => "delivered",
        DeliveryStatus.Failed => "failed",
        _ => throw new ArgumentOutOfRangeException(nameof(s)),
    };

    /// <summary>The transition a finishing job makes for its final status.</summary>
    public static JobTransition TransitionOf(JobStatus s) => s switch
    {
        JobStatus.Succeeded => JobTransition.Succeeded,
        JobStatus.Failed => JobTransition.Failed,
        JobStatus.Canceled => JobTransition.Canceled,
        _ => throw new ArgumentOutOfRangeException(nameof(s)),
    };
}
