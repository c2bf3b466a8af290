using Microsoft.Extensions.Options;
using OmniConsistency.Api.Jobs;
using OmniConsistency.Api.Options;

namespace OmniConsistency.Api.Storage;

/// <summary>
/// Runs before every other hosted service: creates the schema and, for a store only this process uses, re-queues
/// the jobs that were running when the process died (bounded by <see cref="QueueOptions.MaxAttempts"/>).
/// </summary>
public sealed class StoreInitializer(IJobStore store, JobSignals signals, IOptions<QueueOptions> queue, TimeProvider time, ILogger<StoreInitializer> logger) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await store.InitializeAsync(cancellationToken);
        if (!store.ExclusiveToThisProcess) return;
        var recovered = await store.RecoverAsync(time.GetUtcNow(), queue.Value.MaxAttempts, includeLiveLeases: true, cancellationToken);
        if (recovered > 0)
        {
            logger.LogWarning("Recovered {Count} job(s) that were running when the service last stopped", recovered);
            signals.WorkAvailable();
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>Deletes result and input files after the retention period, and old finished job records.</summary>
public sealed class RetentionCleanupService(IJobStore store, IBlobStore blobs, IOptions<StorageOptions> options, TimeProvider time,
    ILogger<RetentionCleanupService> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var o = options.Value;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await RunOnceAsync(stoppingToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                logger.LogError(ex, "Retention cleanup failed");
            }
            await Task.Delay(o.CleanupInterval, time, stoppingToken);
        }
    }

    public async Task RunOnceAsync(CancellationToken ct)
    {
        var now = time.GetUtcNow();
        int files = 0, jobs = 0;
        while (true)
        {
            var expired = await store.ListExpiredResultsAsync(now, 200, ct);
            foreach (var e in expired)
            {
                foreach (var blob in e.Blobs) { await blobs.DeleteAsync(blob, ct); files++; }
                await store.MarkResultExpiredAsync(e.JobId, ct);
            }
            if (expired.Count < 200) break;
        }
        while (true)
        {
            var deleted = await store.DeleteFinishedJobsAsync(now - options.Value.JobRetention, 200, ct);
            foreach (var e in deleted)
                foreach (var blob in e.Blobs) { await blobs.DeleteAsync(blob, ct); files++; }
            jobs += deleted.Count;
            if (deleted.Count < 200) break;
        }
        if (files + jobs > 0) logger.LogInformation("Retention cleanup deleted {Files} files and {Jobs} job records", files, jobs);
    }
}
