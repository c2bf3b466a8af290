using Microsoft.Extensions.Options;
using Npgsql;
using OmniConsistency.Api.Options;

namespace OmniConsistency.Api.Hosting;

/// <summary>Says at start which role this process plays and which shared stores it uses (never a password).</summary>
public sealed class RoleStartupReport(HostRole role, IOptions<StorageOptions> storage, IOptions<BlobOptions> blobs, IConfiguration configuration,
    ILogger<RoleStartupReport> logger) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        var store = storage.Value.Provider == JobStoreProvider.Sqlite
            ? $"sqlite {storage.Value.DatabasePath}"
            : Describe(ScaleOutRegistration.PostgresConnectionString(configuration, storage.Value) ?? "");
        var blob = blobs.Value.Provider == BlobProvider.S3
            ? $"s3 bucket {blobs.Value.S3.Bucket} prefix '{blobs.Value.S3.Prefix}'{(blobs.Value.S3.ServiceUrl is { Length: > 0 } u ? " at " + u : "")}"
            : $"folder {(string.IsNullOrWhiteSpace(blobs.Value.Directory) ? Path.Combine(storage.Value.DataPath, "blobs") : Path.GetFullPath(blobs.Value.Directory))}";
        logger.LogInformation("Role {Role}: job store {Store}; blobs in {Blobs}", role.Role.ToString().ToLowerInvariant(), store, blob);
        if (role.Role == ServiceRole.Worker)
            logger.LogInformation("Worker role: serves only /healthz, /readyz and /metrics (no /v1), on every configured address so probes reach it");
        return Task.CompletedTask;
    }

    private static string Describe(string connectionString)
    {
        var b = new NpgsqlConnectionStringBuilder(connectionString);
        return $"postgres {b.Host}:{b.Port}/{b.Database}{(b.SearchPath is { Length: > 0 } sp ? " (schema " + sp + ")" : "")}";
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
