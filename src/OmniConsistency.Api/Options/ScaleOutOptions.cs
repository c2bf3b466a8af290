using System.ComponentModel.DataAnnotations;
using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Options;

/// <summary>What this process does. One binary; replicas of each role scale separately.</summary>
public enum ServiceRole
{
    /// <summary>API, worker and webhook dispatcher in one process (the default; the only role SQLite allows).</summary>
    All,
    /// <summary>HTTP API, webhook dispatcher, retention cleanup, lease recovery. Never loads the model.</summary>
    Api,
    /// <summary>Loads the model and runs jobs; serves only /healthz, /readyz and /metrics.</summary>
    Worker,
}

public static class RoleOptions
{
    /// <summary>Configuration key of the role; <c>--role api|worker|all</c> on the command line sets it too.</summary>
    public const string Key = "Omni:Role";

    public static bool RunsApi(this ServiceRole role) => role is ServiceRole.All or ServiceRole.Api;
    public static bool RunsWorker(this ServiceRole role) => role is ServiceRole.All or ServiceRole.Worker;

    /// <summary>Reads the role; a value that is not all, api or worker stops the start with a message saying so.</summary>
    public static ServiceRole Read(Microsoft.Extensions.Configuration.IConfiguration configuration)
    {
        var value = configuration[Key];
        if (string.IsNullOrWhiteSpace(value)) return ServiceRole.All;
        return value.Trim().ToLowerInvariant() switch
        {
            "all" => ServiceRole.All,
            "api" => ServiceRole.Api,
            "worker" => ServiceRole.Worker,
            _ => throw new InvalidOperationException($"{Key} (--role) must be all, api or worker; got '{value}'."),
        };
    }
}

public enum BlobProvider { Filesystem, S3 }

/// <summary>Where input photos and result images are kept; every API and worker process must see the same store.</summary>
public sealed class BlobOptions
{
    public const string Section = "Omni:Blobs";
    /// <summary>filesystem (a folder; a shared volume when processes run on several machines) or s3 (an S3-compatible bucket).</summary>
    public BlobProvider Provider { get; set; } = BlobProvider.Filesystem;
    /// <summary>The folder for <see cref="BlobProvider.Filesystem"/>; empty: "blobs" under Omni:Storage:DataDirectory.</summary>
    public string? Directory { get; set; }
    public S3BlobOptions S3 { get; set; } = new();
}

public sealed class S3BlobOptions
{
    public string? Bucket { get; set; }
    /// <summary>Key prefix inside the bucket, e.g. "omni/" (lets several deployments share one bucket).</summary>
    public string Prefix { get; set; } = "";
    /// <summary>Endpoint of an S3-compatible service (MinIO, Ceph, R2, ...); empty: AWS in <see cref="Region"/>.</summary>
    public string? ServiceUrl { get; set; }
    /// <summary>AWS region (also the signing region for other services); empty: from the AWS environment, else us-east-1.</summary>
    public string? Region { get; set; }
    /// <summary>Path-style URLs (host/bucket/key): what most S3-compatible services need.</summary>
    public bool ForcePathStyle { get; set; }
    /// <summary>Static credentials; leave both empty to use the AWS default chain (env AWS_ACCESS_KEY_ID..., web identity / IRSA, instance role).</summary>
    public string? AccessKeyId { get; set; }
    public string? SecretAccessKey { get; set; }
    /// <summary>GET .../result answers 307 to a pre-signed URL of the object (false: the API streams the object itself).</summary>
    public bool RedirectResults { get; set; } = true;
    /// <summary>How long a pre-signed result URL is valid.</summary>
    public TimeSpan PresignedUrlLifetime { get; set; } = TimeSpan.FromMinutes(15);
}

/// <summary>
/// What the api role accepts without loading the model: the style catalog is the engine's LoRA folder itself (mounted
/// read-only, as in the workers) and the request limits are the engine's. It reads the same "Omni:Engine" keys as the
/// engine, with the engine's own defaults (<see cref="StylizationEngineOptions"/>; the upload, prompt and style-count
/// limits fall back to Omni:Limits as <c>EngineRegistration.CreateOptions</c> does), so one configuration describes
/// both roles. In the all role the loaded engine answers instead; these are its limits while it loads.
/// </summary>
public sealed class EngineCatalogOptions : IValidatableObject
{
    public const string Section = "Omni:Engine";
    private static readonly StylizationEngineOptions EngineDefaults = new();

    /// <summary>Folder of &lt;name&gt;.safetensors style LoRAs with optional &lt;name&gt;.json sidecars; empty: no styles (base model only).</summary>
    public string? LoraFolder { get; set; }
    /// <summary>Largest output width or height.</summary>
    [Range(16, 65536)] public int MaxSide { get; set; } = EngineDefaults.MaxSide;
    /// <summary>Largest output width × height.</summary>
    [Range(256, long.MaxValue)] public long MaxPixels { get; set; } = EngineDefaults.MaxPixels;
    /// <summary>Output area when the request gives no size.</summary>
    public long DefaultPixels { get; set; } = EngineDefaults.DefaultPixels;
    [Range(16, 65536)] public int MaxCondSize { get; set; } = EngineDefaults.MaxCondSize;
    public int DefaultCondSize { get; set; } = EngineDefaults.DefaultCondSize;
    [Range(1, 1000)] public int MaxSteps { get; set; } = EngineDefaults.MaxSteps;
    public int DefaultSteps { get; set; } = EngineDefaults.DefaultSteps;
    public double MinGuidance { get; set; } = EngineDefaults.MinGuidance;
    public double MaxGuidance { get; set; } = EngineDefaults.MaxGuidance;
    /// <summary>Null: Omni:Limits's (as the engine).</summary>
    public int? MaxStyles { get; set; }
    public int? MaxPromptLength { get; set; }
    public long? MaxImageBytes { get; set; }
    public int? MaxImageSide { get; set; }
    public long? MaxImagePixels { get; set; }

    /// <summary>These limits as the engine's options, so the engine's rules check them and <see cref="Engine.SubmissionLimits"/> reads one shape.</summary>
    public StylizationEngineOptions ToEngineOptions(LimitsOptions limits) => new()
    {
        LoraFolder = LoraFolder, MaxSide = MaxSide, MaxPixels = MaxPixels, DefaultPixels = DefaultPixels, MaxCondSize = MaxCondSize,
        DefaultCondSize = DefaultCondSize, MaxSteps = MaxSteps, DefaultSteps = DefaultSteps, MinGuidance = MinGuidance, MaxGuidance = MaxGuidance,
        MaxStyles = MaxStyles ?? limits.MaxStyles, MaxPromptLength = MaxPromptLength ?? limits.MaxPromptLength,
        MaxImageBytes = MaxImageBytes ?? limits.MaxImageBytes, MaxImageSide = MaxImageSide ?? limits.MaxImageSide,
        MaxImagePixels = MaxImagePixels ?? limits.MaxImagePixels,
    };

    /// <summary>The engine's own checks (default within max, finite guidance range, ...), so the api role refuses what a worker would.</summary>
    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        string? problem = null;
        try
        {
            ToEngineOptions(new LimitsOptions()).Validate();
        }
        catch (ArgumentException e)
        {
            problem = $"{Section}: {e.Message}";
        }
        if (problem is not null) yield return new ValidationResult(problem);
    }
}
