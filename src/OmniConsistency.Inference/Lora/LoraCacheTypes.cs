namespace OmniConsistency.Inference.Lora;

/// <summary>Budgets and start-up behaviour of <see cref="LoraAdapterCache"/>.</summary>
public sealed record LoraCacheOptions
{
    /// <summary>Bytes of converted adapters kept in host memory: the working set on a CPU model, or the copies kept
    /// for fast re-upload when the model runs on an accelerator.</summary>
    public long HostBudgetBytes { get; init; } = 4L << 30;

    /// <summary>Bytes of adapters kept on the accelerator (ignored for a CPU model).</summary>
    public long DeviceBudgetBytes { get; init; } = 2L << 30;

    /// <summary>For an accelerator model: also keep a host copy of each loaded adapter, so that an adapter evicted from
    /// the device comes back with one upload instead of a read-and-convert from disk.</summary>
    public bool KeepHostCopy { get; init; } = true;

    /// <summary>LoRA files to load at start (<see cref="LoraAdapterCache.PreloadAsync"/>).</summary>
    public IReadOnlyList<string> Preload { get; init; } = [];
}

/// <summary>A snapshot of the cache's counters and sizes.</summary>
/// <param name="Hits">Acquisitions served from the working tier.</param>
/// <param name="Misses">Acquisitions that had to load (or wait for a load in progress: <paramref name="SharedLoads"/>).</param>
/// <param name="HostCopyHits">Misses served by uploading a host copy instead of reading the file.</param>
/// <param name="SharedLoads">Misses that joined a load already in progress for the same file.</param>
/// <param name="DiskLoads">Files read and converted.</param>
/// <param name="LoadFailures">Loads that failed (bad file, shape mismatch, I/O).</param>
/// <param name="Evictions">Entries removed to make room (both tiers).</param>
/// <param name="Uncached">Adapters handed out without caching because they could not fit the budget (larger than it, or
/// everything else leased); freed when their lease ends.</param>
public sealed record LoraCacheMetrics(
    long Hits, long Misses, long HostCopyHits, long SharedLoads, long DiskLoads, long LoadFailures, long Evictions, long Uncached,
    int Entries, int LeasedEntries, long Bytes, long BudgetBytes,
    int HostCopyEntries, long HostCopyBytes, long HostCopyBudgetBytes);

/// <summary>
/// A running job's hold on a cached adapter: while any lease is open the entry is not evicted. Dispose when the
/// generation ends.
/// </summary>
public sealed class LoraLease : IDisposable
{
    private Action? _release;

    internal LoraLease(LoraAdapter adapter, bool cached, Action release)
    {
        Adapter = adapter;
        IsCached = cached;
        _release = release;
    }

    public LoraAdapter Adapter { get; }
    /// <summary>False for an adapter that did not fit the budget: it is freed when this lease ends.</summary>
    public bool IsCached { get; }

    public void Dispose() => Interlocked.Exchange(ref _release, null)?.Invoke();
}
