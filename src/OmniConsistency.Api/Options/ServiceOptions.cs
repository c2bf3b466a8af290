using System.ComponentModel.DataAnnotations;

namespace OmniConsistency.Api.Options;

// All options live under the "Omni" configuration section: appsettings.json "Omni": {...} or env vars OMNI__Queue__Capacity=...

public sealed class StorageOptions
{
    public const string Section = "Omni:Storage";
    /// <summary>The job store: sqlite (embedded, one process) or postgres (shared by API replicas and workers).</summary>
    public JobStoreProvider Provider { get; set; } = JobStoreProvider.Sqlite;
    /// <summary>Npgsql connection string for <see cref="JobStoreProvider.Postgres"/>; ConnectionStrings:Jobs is used when this is empty.</summary>
    public string? PostgresConnectionString { get; set; }
    /// <summary>Root of everything the service writes: the job database, inputs and results.</summary>
    [Required] public string DataDirectory { get; set; } = "data";
    /// <summary>SQLite database file; relative paths are under <see cref="DataDirectory"/>.</summary>
    [Required] public string DatabaseFile { get; set; } = "jobs.db";
    /// <summary>How long a finished job's image is kept.</summary>
    public TimeSpan ResultRetention { get; set; } = TimeSpan.FromHours(24);
    /// <summary>How long a finished job's record (status, events, webhook log) is kept.</summary>
    public TimeSpan JobRetention { get; set; } = TimeSpan.FromDays(7);
    public TimeSpan CleanupInterval { get; set; } = TimeSpan.FromMinutes(10);

    public string DataPath => Path.GetFullPath(DataDirectory);
    public string DatabasePath => Path.IsPathRooted(DatabaseFile) ? DatabaseFile : Path.Combine(DataPath, DatabaseFile);
}

public enum JobStoreProvider { Sqlite, Postgres }

public sealed class QueueOptions
{
    public const string Section = "Omni:Queue";
    /// <summary>Most jobs waiting at once; beyond it submissions get 429 with Retry-After.</summary>
    [Range(1, 1_000_000)] public int Capacity { get; set; } = 100;
    /// <summary>How many times a job may be started (a restart while it runs counts as one) before it fails.</summary>
    [Range(1, 100)] public int MaxAttempts { get; set; } = 3;
    /// <summary>A running job's lease; the worker renews it at a third of this. An expired lease re-queues the job.</summary>
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromMinutes(2);
    /// <summary>How often an idle worker looks for work when no in-process signal woke it.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(1);
    /// <summary>Retry-After for a full queue when no job timing is known yet.</summary>
    [Range(1, 3600)] public int DefaultRetryAfterSeconds { get; set; } = 30;
}

public sealed class WorkerOptions
{
    public const string Section = "Omni:Worker";
    public bool Enabled { get; set; } = true;
    /// <summary>Jobs run at once in this process (one per device by default).</summary>
    [Range(1, 64)] public int Concurrency { get; set; } = 1;
    /// <summary>A job running longer than this fails with job-timeout.</summary>
    public TimeSpan JobTimeout { get; set; } = TimeSpan.FromMinutes(15);
}

public sealed class LimitsOptions
{
    public const string Section = "Omni:Limits";
    /// <summary>Largest request body (multipart or JSON with base64 image).</summary>
    [Range(1024, long.MaxValue)] public long MaxRequestBytes { get; set; } = 32L * 1024 * 1024;
    /// <summary>Largest encoded input image.</summary>
    [Range(64, long.MaxValue)] public long MaxImageBytes { get; set; } = 20L * 1024 * 1024;
    /// <summary>Largest decoded input image (width × height): guards against decompression bombs.</summary>
    [Range(1, long.MaxValue)] public long MaxImagePixels { get; set; } = 40_000_000;
    [Range(1, 65535)] public int MaxImageSide { get; set; } = 12_000;
    [Range(1, 100_000)] public int MaxPromptLength { get; set; } = 2000;
    [Range(1, 16)] public int MaxStyles { get; set; } = 4;
    /// <summary>Submissions whose image is decoded at once (the full decode that catches corrupt files costs memory).</summary>
    [Range(1, 256)] public int MaxConcurrentImageChecks { get; set; } = Math.Max(2, Environment.ProcessorCount);
    /// <summary>Upper bound for Prefer: wait=N.</summary>
    [Range(0, 600)] public int MaxPreferWaitSeconds { get; set; } = 60;
}

public sealed class ApiOptions
{
    public const string Section = "Omni:Api";
    /// <summary>Base URL used in links (Location, webhook payloads) instead of the request's own host, e.g. behind a proxy.</summary>
    public string? PublicBaseUrl { get; set; }
}

public sealed class WebhookOptions
{
    public const string Section = "Omni:Webhooks";
    /// <summary>Signing secret "whsec_" + base64. Empty: one is generated once and kept in the data directory.</summary>
    public string? Secret { get; set; }
    public TimeSpan AttemptTimeout { get; set; } = TimeSpan.FromSeconds(15);
    /// <summary>Quick retries inside one delivery round (Polly, exponential with jitter).</summary>
    [Range(0, 10)] public int RoundRetries { get; set; } = 2;
    public TimeSpan RoundRetryDelay { get; set; } = TimeSpan.FromSeconds(1);
    /// <summary>Durable schedule between rounds: exponential from this base with jitter, capped at <see cref="MaxRetryDelay"/>.</summary>
    public TimeSpan RetryBaseDelay { get; set; } = TimeSpan.FromSeconds(30);
    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromHours(2);
    /// <summary>A delivery not done after this long is given up.</summary>
    public TimeSpan MaxDeliveryAge { get; set; } = TimeSpan.FromHours(24);
    /// <summary>Allow any private, loopback or link-local destination (development only).</summary>
    public bool AllowPrivateAddresses { get; set; }
    /// <summary>CIDR ranges allowed even though private/loopback, e.g. "127.0.0.1/32".</summary>
    public List<string> AllowedNetworks { get; set; } = [];
    [Range(1, 256)] public int MaxConcurrentDeliveries { get; set; } = 8;
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(1);
}

public sealed class ApiKeyEntry
{
    /// <summary>Who the key belongs to: appears in logs and partitions jobs and rate limits.</summary>
    public string Name { get; set; } = "";
    /// <summary>The key itself (hashed at start, never kept), or leave empty and give <see cref="KeySha256"/>.</summary>
    public string? Key { get; set; }
    /// <summary>Lower-case hex SHA-256 of the key.</summary>
    public string? KeySha256 { get; set; }
    /// <summary>Overrides <see cref="RateLimitOptions.PermitsPerMinute"/> for this key.</summary>
    public int? PermitsPerMinute { get; set; }
}

public sealed class AuthOptions
{
    public const string Section = "Omni:Auth";
    /// <summary>No keys: the service is open and listens on loopback only.</summary>
    public List<ApiKeyEntry> ApiKeys { get; set; } = [];
}

public sealed class RateLimitOptions
{
    public const string Section = "Omni:RateLimit";
    /// <summary>Requests per minute per API key on /v1 (token bucket, bursts up to this many).</summary>
    [Range(1, int.MaxValue)] public int PermitsPerMinute { get; set; } = 600;
}
