using Npgsql;
using OmniConsistency.Api.Jobs;

namespace OmniConsistency.Api.Storage;

/// <summary>
/// What <see cref="PostgresJobStore"/> sends with <c>NOTIFY</c>: "work" (a job became claimable), "job:&lt;id&gt;"
/// (a job changed: SSE streams, Prefer: wait and the webhook dispatcher re-read it) and "cancel:&lt;id&gt;" (stop
/// that running job now, wherever it runs). Notifications only wake processes early; everyone still polls the store.
/// </summary>
public static class PostgresNotifications
{
    public const string Channel = "omni_jobs";
    public const string WorkAvailable = "work";
    public static string JobChanged(string jobId) => "job:" + jobId;
    public static string CancelRequested(string jobId) => "cancel:" + jobId;

    /// <summary>Turns one notification into this process's signals.</summary>
    public static void Dispatch(string payload, JobSignals signals, RunningJobs running)
    {
        if (payload == WorkAvailable) signals.WorkAvailable();
        else if (payload.StartsWith("job:", StringComparison.Ordinal)) signals.JobChanged(payload[4..]);
        else if (payload.StartsWith("cancel:", StringComparison.Ordinal))
        {
            var id = payload[7..];
            running.TryCancel(id);
            signals.JobChanged(id);
        }
    }
}

/// <summary>
/// Holds one connection that LISTENs on <see cref="PostgresNotifications.Channel"/> and forwards what arrives to
/// <see cref="JobSignals"/> and <see cref="RunningJobs"/>, so an idle worker claims a job submitted to another
/// replica at once and a cancel sent to any API replica stops the job in the worker that runs it. A broken
/// connection is re-opened with backoff; after each (re)connect waiters are woken once, for anything missed.
/// </summary>
public sealed class PostgresNotificationListener(
    NpgsqlDataSource dataSource, JobSignals signals, RunningJobs running, ILogger<PostgresNotificationListener> logger) : BackgroundService
{
    /// <summary>Idle time after which the connection is checked with a query (a silently dropped connection would never wake).</summary>
    private static readonly TimeSpan IdleCheck = TimeSpan.FromSeconds(30);

    public bool Listening { get; private set; }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var backoff = TimeSpan.FromMilliseconds(500);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await using var conn = await dataSource.OpenConnectionAsync(stoppingToken);
                conn.Notification += (_, e) => PostgresNotifications.Dispatch(e.Payload, signals, running);
                await using (var listen = new NpgsqlCommand($"LISTEN {PostgresNotifications.Channel}", conn))
                    await listen.ExecuteNonQueryAsync(stoppingToken);
                Listening = true;
                backoff = TimeSpan.FromMilliseconds(500);
                logger.LogDebug("Listening for job notifications on channel {Channel}", PostgresNotifications.Channel);
                signals.WorkAvailable();
                while (true)
                {
                    if (!await conn.WaitAsync(IdleCheck, stoppingToken))
                    {
                        await using var ping = new NpgsqlCommand("SELECT 1", conn);
                        await ping.ExecuteScalarAsync(stoppingToken);
                    }
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                Listening = false;
                logger.LogWarning("Job notifications unavailable ({Error}); reconnecting in {Delay} (workers poll meanwhile)", ex.Message, backoff);
                try { await Task.Delay(backoff, stoppingToken); }
                catch (OperationCanceledException) { break; }
                backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, TimeSpan.FromSeconds(30).Ticks));
            }
        }
        Listening = false;
    }
}
