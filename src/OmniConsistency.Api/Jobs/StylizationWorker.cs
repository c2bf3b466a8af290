using System.Diagnostics;
using System.Security.Cryptography;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using OmniConsistency.Api.Engine;
using OmniConsistency.Api.Observability;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Storage;
using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Jobs;

/// <summary>Whether the worker loop is serving (part of /readyz).</summary>
public sealed class WorkerStatus
{
    public volatile bool Running;
}

/// <summary>
/// The GPU worker: claims jobs oldest first and runs them on the engine, <see cref="WorkerOptions.Concurrency"/> at a
/// time (one per device by default). Every job is isolated: whatever it throws fails that job alone. A job holds a
/// lease renewed by a heartbeat that also picks up cancel requests; on orderly shutdown a running job goes back to
/// the queue, and after a crash it is re-queued at the next start.
/// </summary>
public sealed partial class StylizationWorker(
    IJobStore store,
    IBlobStore blobs,
    EngineHost engineHost,
    JobSignals signals,
    RunningJobs running,
    WorkerStatus status,
    ServiceMetrics metrics,
    IOptions<WorkerOptions> workerOptions,
    IOptions<QueueOptions> queueOptions,
    TimeProvider time,
    ILogger<StylizationWorker> logger) : BackgroundService
{
    private readonly string _workerId = $"{Environment.MachineName}/{Environment.ProcessId}/{Guid.NewGuid():N}";
    private readonly WorkerOptions _worker = workerOptions.Value;
    private readonly QueueOptions _queue = queueOptions.Value;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!_worker.Enabled)
        {
            logger.LogInformation("Worker disabled by configuration (Omni:Worker:Enabled=false)");
            return;
        }
        var engine = await engineHost.Loaded.WaitAsync(stoppingToken);
        if (engine is null) return;

        status.Running = true;
        logger.LogInformation("Worker {WorkerId} serving with {Concurrency} slot(s), job timeout {Timeout}", _workerId, _worker.Concurrency, _worker.JobTimeout);
        try
        {
            // Expired leases (a dead worker's jobs) are given back by LeaseRecoveryService, which runs in every role.
            await Task.WhenAll(Enumerable.Range(0, _worker.Concurrency).Select(_ => ServeAsync(engine, stoppingToken)));
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { }
        finally
        {
            status.Running = false;
        }
    }

    private async Task ServeAsync(IStylizationEngine engine, CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            JobRecord? job;
            try
            {
                job = await store.ClaimNextAsync(_workerId, _queue.LeaseDuration, time.GetUtcNow(), stoppingToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                logger.LogError(ex, "Claiming a job failed; retrying");
                await Task.Delay(_queue.PollInterval, stoppingToken);
                continue;
            }
            if (job is null)
            {
                await signals.WaitForWorkAsync(_queue.PollInterval, stoppingToken);
                continue;
            }
            signals.JobChanged(job.Id);
            using (Serilog.Context.LogContext.PushProperty("JobId", job.Id))
            {
                try
                {
                    await RunJobAsync(engine, job, stoppingToken);
                }
                catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
                {
                    // Only the store can fail here (engine errors are the job's). The lease is no longer renewed,
                    // so the job is re-queued when it expires; the worker goes on.
                    logger.LogError(ex, "Job {JobId} could not be recorded; it is retried when its lease expires", job.Id);
                    await Task.Delay(_queue.PollInterval, stoppingToken);
                }
            }
        }
    }

    private async Task RunJobAsync(IStylizationEngine engine, JobRecord job, CancellationToken stoppingToken)
    {
        // Linked to shutdown too: a worker that is going away must stop renewing leases.
        using var heartbeatStop = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        try
        {
            await RunJobCoreAsync(engine, job, heartbeatStop, stoppingToken);
        }
        finally
        {
            // Whatever happened, this process no longer works on the job: stop the heartbeat so the lease can expire.
            running.Unregister(job.Id);
            await heartbeatStop.CancelAsync();
        }
    }

    private async Task RunJobCoreAsync(IStylizationEngine engine, JobRecord job, CancellationTokenSource heartbeatStop, CancellationToken stoppingToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        var entry = running.Register(job.Id, cts);
        var leaseLost = false;
        var clock = Stopwatch.StartNew();
        JobCompletion completion;
        var heartbeat = HeartbeatAsync(job.Id, entry, () => leaseLost = true, heartbeatStop.Token);
        var progress = new ProgressWriter((p, stepTime) => RecordProgressAsync(job.Id, p, stepTime));
        try
        {
            if (job.CancelRequested) entry.CancelRequested = true;
            cts.CancelAfter(_worker.JobTimeout);
            if (entry.CancelRequested) await cts.CancelAsync();
            cts.Token.ThrowIfCancellationRequested();

            var image = await blobs.ReadAllAsync(job.InputBlob, cts.Token);
            // Its own thread: a real engine computes synchronously for long stretches and must not hold a pool thread.
            var request = new StylizationRequest(job.Parameters, image);
            var result = await Task.Factory.StartNew(() => engine.RunAsync(request, progress, cts.Token), CancellationToken.None,
                TaskCreationOptions.LongRunning, TaskScheduler.Default).Unwrap();
            completion = await StoreResultAsync(job, result, cts.Token);
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested)
        {
            if (leaseLost)
            {
                logger.LogWarning("Job {JobId} lost its lease (re-queued elsewhere); dropping this attempt", job.Id);
                await FinishAsync(heartbeatStop, heartbeat, progress, job.Id);
                return;
            }
            if (entry.CancelRequested)
                completion = new JobCompletion(JobStatus.Canceled, null, new JobError("job-canceled", "Canceled", "The job was canceled on request."), clock.ElapsedMilliseconds);
            else if (stoppingToken.IsCancellationRequested)
            {
                await FinishAsync(heartbeatStop, heartbeat, progress, job.Id);
                var released = await store.ReleaseAsync(job.Id, _workerId, time.GetUtcNow(), CancellationToken.None);
                logger.LogInformation("Job {JobId} returned to the queue on shutdown (released: {Released})", job.Id, released);
                return;
            }
            else
                completion = new JobCompletion(JobStatus.Failed, null,
                    new JobError("job-timeout", "Job timed out", $"The job ran longer than the {_worker.JobTimeout} limit and was stopped."), clock.ElapsedMilliseconds);
        }
        catch (StylizationRequestException ex)
        {
            completion = new JobCompletion(JobStatus.Failed, null, new JobError(SafeSlug(ex.ErrorType), "The request cannot be run", ex.Message), clock.ElapsedMilliseconds);
        }
        catch (Exception ex)
        {
            // Anything else (out of memory, bad weights, a bug) fails this job only; the worker goes on.
            logger.LogError(ex, "Job {JobId} failed in the engine", job.Id);
            completion = new JobCompletion(JobStatus.Failed, null,
                new JobError("inference-failed", "Inference failed", $"{ex.GetType().Name}: {ex.Message}"), clock.ElapsedMilliseconds);
        }

        await FinishAsync(heartbeatStop, heartbeat, progress, job.Id);
        var finished = await store.CompleteAsync(job.Id, _workerId, completion, time.GetUtcNow(), CancellationToken.None);
        signals.JobChanged(job.Id);
        if (finished is null)
        {
            logger.LogWarning("Job {JobId} finished as {Status} but its lease was lost; result discarded", job.Id, completion.Status);
            return;
        }
        await TryDeleteAsync(job.InputBlob);
        var queueWait = finished.QueueWaitMs is { } qw ? TimeSpan.FromMilliseconds(qw) : (TimeSpan?)null;
        metrics.JobFinished(finished.Status, TimeSpan.FromMilliseconds(completion.InferenceMs ?? 0), queueWait);
        LogSummary(finished, clock.Elapsed);
    }

    private async Task FinishAsync(CancellationTokenSource heartbeatStop, Task heartbeat, ProgressWriter progress, string jobId)
    {
        running.Unregister(jobId);
        await heartbeatStop.CancelAsync();
        try { await heartbeat; } catch (OperationCanceledException) { }
        await progress.DrainAsync();
    }

    private async Task<JobCompletion> StoreResultAsync(JobRecord job, StylizationResult result, CancellationToken ct)
    {
        var ext = job.Parameters.OutputFormat switch
        {
            ImageOutputFormat.Jpeg => "jpg",
            ImageOutputFormat.Webp => "webp",
            _ => "png",
        };
        var blob = $"results/{job.Id}.{ext}";
        await blobs.WriteAsync(blob, result.Image, ct);
        var etag = "\"" + Convert.ToHexStringLower(SHA256.HashData(result.Image))[..32] + "\"";
        var info = new JobResultInfo(blob, result.ContentType, result.Width, result.Height, result.Image.LongLength, etag,
            result.EffectivePrompt, result.Warnings);
        return new JobCompletion(JobStatus.Succeeded, info, null, (long)result.InferenceTime.TotalMilliseconds);
    }

    private async Task HeartbeatAsync(string jobId, RunningJobs.Entry entry, Action onLeaseLost, CancellationToken ct)
    {
        var interval = _queue.LeaseDuration / 3;
        while (!ct.IsCancellationRequested)
        {
            await Task.Delay(interval, time, ct);
            try
            {
                var lease = await store.RenewLeaseAsync(jobId, _workerId, _queue.LeaseDuration, time.GetUtcNow(), ct);
                if (!lease.Held) onLeaseLost();
                if (lease.CancelRequested) entry.CancelRequested = true;
                if (!lease.Held || lease.CancelRequested) await entry.Cts.CancelAsync();
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                logger.LogWarning(ex, "Lease renewal for job {JobId} failed", jobId);
            }
        }
    }

    private async Task TryDeleteAsync(string blob)
    {
        try { await blobs.DeleteAsync(blob, CancellationToken.None); }
        catch (Exception ex) { logger.LogWarning(ex, "Could not delete {Blob}", blob); }
    }

    private void LogSummary(JobRecord job, TimeSpan wall)
    {
        var p = job.Parameters;
        var styles = p.Styles.Count == 0 ? "(none)" : string.Join(",", p.Styles.Select(s => $"{s.Name}:{s.Weight:0.##}"));
        var size = job.Result is { } r ? $"{r.Width}x{r.Height}" : p.Width is { } w && p.Height is { } h ? $"{w}x{h}" : "auto";
        logger.LogInformation(
            "Job {JobId} {Status}: styles={Styles} size={Size} steps={Steps} seed={Seed} attempt={Attempt} queueWait={QueueWaitMs}ms run={RunMs}ms{ErrorSuffix}",
            job.Id, job.Status.ToWire(), styles, size, p.Steps, p.Seed, job.Attempts, job.QueueWaitMs ?? 0, (long)wall.TotalMilliseconds,
            job.Error is { } e ? $" error={e.Type}: {e.Detail}" : "");
    }

    private static string SafeSlug(string errorType) =>
        errorType.Length is > 0 and <= 64 && errorType.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c == '-') ? errorType : "invalid-request";

    private async Task RecordProgressAsync(string jobId, StylizationProgress p, TimeSpan? stepTime)
    {
        if (stepTime is { } t) metrics.StepCompleted(t);
        try
        {
            await store.ReportProgressAsync(jobId, _workerId, new JobProgress(p.Phase, p.Step, p.TotalSteps), time.GetUtcNow(), CancellationToken.None);
            signals.JobChanged(jobId);
        }
        catch (Exception ex)
        {
            logger.LogWarning(ex, "Recording progress of job {JobId} failed", jobId);
        }
    }

    /// <summary>
    /// Engine progress, written to the store in the order reported. The engine calls Report on its own thread and
    /// must not wait for the database, hence the queue.
    /// </summary>
    private sealed class ProgressWriter : IProgress<StylizationProgress>
    {
        private readonly Func<StylizationProgress, TimeSpan?, Task> _record;
        private readonly Channel<(StylizationProgress Progress, long Ticks)> _queue =
            Channel.CreateUnbounded<(StylizationProgress, long)>(new UnboundedChannelOptions { SingleReader = true });
        private readonly Task _pump;

        public ProgressWriter(Func<StylizationProgress, TimeSpan?, Task> record)
        {
            _record = record;
            _pump = Task.Run(PumpAsync);
        }

        public void Report(StylizationProgress value) => _queue.Writer.TryWrite((value, Stopwatch.GetTimestamp()));

        public async Task DrainAsync()
        {
            _queue.Writer.TryComplete();
            await _pump;
        }

        private async Task PumpAsync()
        {
            StylizationProgress? previous = null;
            long previousTicks = 0;
            await foreach (var (p, ticks) in _queue.Reader.ReadAllAsync())
            {
                // A step's time is the gap between consecutive reports of the same phase.
                TimeSpan? stepTime = previous is not null && previous.Phase == p.Phase && p.Step > previous.Step
                    ? Stopwatch.GetElapsedTime(previousTicks, ticks) : null;
                previous = p;
                previousTicks = ticks;
                await _record(p, stepTime);
            }
        }
    }
}
