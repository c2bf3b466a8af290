using System.Collections.Concurrent;
using System.Threading.Channels;

namespace OmniConsistency.Api.Jobs;

/// <summary>
/// In-process wake-ups so workers, SSE streams and Prefer: wait answer at once instead of at the next poll. The
/// store stays the truth: every waiter re-reads it, and polls anyway (other processes don't signal here).
/// </summary>
public sealed class JobSignals
{
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _jobWaiters = new();
    private readonly Channel<bool> _work = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });

    private readonly Channel<bool> _webhooks = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });

    public void WorkAvailable() => _work.Writer.TryWrite(true);

    /// <summary>Waits until a job changed (it may have queued a webhook) or the timeout passes.</summary>
    public async Task WaitForWebhooksAsync(TimeSpan timeout, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        try { await _webhooks.Reader.ReadAsync(cts.Token); }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested) { }
    }

    /// <summary>Waits until work may be available or the timeout passes.</summary>
    public async Task WaitForWorkAsync(TimeSpan timeout, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        try { await _work.Reader.ReadAsync(cts.Token); }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested) { }
    }

    public void JobChanged(string jobId)
    {
        _webhooks.Writer.TryWrite(true);
        if (_jobWaiters.TryRemove(jobId, out var tcs)) tcs.TrySetResult();
    }

    /// <summary>Waits until the job changes or the timeout passes (whichever first); never throws on timeout.</summary>
    public async Task WaitForJobChangeAsync(string jobId, TimeSpan timeout, CancellationToken ct)
    {
        var tcs = _jobWaiters.GetOrAdd(jobId, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        try { await tcs.Task.WaitAsync(timeout, ct); }
        catch (TimeoutException) { }
    }
}

/// <summary>Jobs running in this process, so a cancel request stops them without waiting for the next heartbeat.</summary>
public sealed class RunningJobs
{
    public sealed class Entry(CancellationTokenSource cts)
    {
        public CancellationTokenSource Cts { get; } = cts;
        public volatile bool CancelRequested;
    }

    private readonly ConcurrentDictionary<string, Entry> _running = new();

    public Entry Register(string jobId, CancellationTokenSource cts) => _running[jobId] = new Entry(cts);

    public void Unregister(string jobId) => _running.TryRemove(jobId, out _);

    public int Count => _running.Count;

    public bool TryCancel(string jobId)
    {
        if (!_running.TryGetValue(jobId, out var entry)) return false;
        entry.CancelRequested = true;
        try { entry.Cts.Cancel(); } catch (ObjectDisposedException) { }
        return true;
    }
}
