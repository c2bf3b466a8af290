using Microsoft.Extensions.Options;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Storage;

namespace OmniConsistency.Api.Jobs;

/// <summary>
/// Gives the jobs of a dead worker back to the queue once their lease has run out (or fails them after
/// <see cref="QueueOptions.MaxAttempts"/>). It runs in every role, so jobs are recovered even while no worker is
/// alive (workers scaled to zero still see the job as queued, and the autoscaler starts one). With several processes
/// each row is handled by one of them (the store skips rows another process holds).
/// </summary>
public sealed class LeaseRecoveryService(IJobStore store, JobSignals signals, IOptions<QueueOptions> queue, TimeProvider time,
    ILogger<LeaseRecoveryService> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = queue.Value.LeaseDuration / 2;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(interval, time, stoppingToken);
                var n = await store.RecoverAsync(time.GetUtcNow(), queue.Value.MaxAttempts, includeLiveLeases: false, stoppingToken);
                if (n > 0)
                {
                    logger.LogWarning("Re-queued {Count} jobs whose lease expired", n);
                    signals.WorkAvailable();
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                logger.LogError(ex, "Lease recovery failed");
            }
        }
    }
}
