using Microsoft.Extensions.Options;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Security;

namespace OmniConsistency.Api.Observability;

/// <summary>Says at start how the service is exposed and where it keeps its data.</summary>
public sealed class StartupReport(ApiKeyRegistry keys, IOptions<StorageOptions> storage, IOptions<QueueOptions> queue,
    IOptions<WorkerOptions> worker, ILogger<StartupReport> logger) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (keys.Open)
            logger.LogWarning("No API keys configured (Omni:Auth:ApiKeys): the service is OPEN and listens on loopback (127.0.0.1) only");
        logger.LogInformation("Data directory {DataPath}; queue capacity {Capacity}; {Slots} worker slot(s); results kept {Retention}",
            storage.Value.DataPath, queue.Value.Capacity, worker.Value.Concurrency, storage.Value.ResultRetention);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
