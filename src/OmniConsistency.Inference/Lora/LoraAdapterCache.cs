using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Lora;

/// <summary>
/// Converted style LoRAs kept in memory for one model, so a style switch is a lookup instead of a read-and-convert.
/// <list type="bullet">
/// <item>Entries are sized in bytes against a budget (device budget for the adapters the model uses on an
///   accelerator, host budget for a CPU model or for host copies kept for re-upload). Before an entry is added, the
///   least recently used unleased entries are evicted until it fits, so the budget is never exceeded.</item>
/// <item>Concurrent requests for one file share one load.</item>
/// <item>An entry leased by a running job (<see cref="LoraLease"/>) is never evicted. An adapter that cannot fit
///   (larger than the budget, or the rest is leased) is handed out uncached and freed with its lease.</item>
/// </list>
/// Storage and size accounting are a <see cref="MemoryCache"/> with <c>SizeLimit</c> = budget; eviction order is
/// decided here because MemoryCache's own compaction neither respects leases nor runs before an insert (it rejects the
/// insert and compacts later, in the background).
/// A file is identified by full path, length and modification time: a changed file is loaded afresh.
/// </summary>
public sealed class LoraAdapterCache : IDisposable
{
    private readonly LoraModelTargets _targets;
    private readonly ScalarType _dtype;
    private readonly Device _device;
    private readonly LoraCacheOptions _options;
    private readonly ILogger _logger;
    private readonly object _gate = new();
    private readonly Tier _working;
    private readonly Tier? _hostCopies;
    private readonly Dictionary<string, PendingLoad> _pending = new(StringComparer.Ordinal);
    private long _hits, _misses, _hostCopyHits, _sharedLoads, _diskLoads, _loadFailures, _evictions, _uncached;
    private bool _disposed;

    public LoraAdapterCache(LoraModelTargets targets, ScalarType dtype, Device device, LoraCacheOptions? options = null, ILogger? logger = null)
    {
        _targets = targets;
        _dtype = dtype;
        _device = device;
        _options = options ?? new LoraCacheOptions();
        _logger = logger ?? NullLogger.Instance;
        if (_options.HostBudgetBytes < 0 || _options.DeviceBudgetBytes < 0) throw new ArgumentOutOfRangeException(nameof(options), "budgets must be >= 0");
        bool onHost = device.type == DeviceType.CPU;
        _working = new Tier(onHost ? "host" : "device", onHost ? _options.HostBudgetBytes : _options.DeviceBudgetBytes);
        if (!onHost && _options.KeepHostCopy && _options.HostBudgetBytes > 0) _hostCopies = new Tier("host-copy", _options.HostBudgetBytes);
    }

    public ScalarType DType => _dtype;
    public Device Device => _device;

    public LoraCacheMetrics Metrics
    {
        get
        {
            lock (_gate)
                return new LoraCacheMetrics(_hits, _misses, _hostCopyHits, _sharedLoads, _diskLoads, _loadFailures, _evictions, _uncached,
                    _working.Entries.Count, _working.Entries.Values.Count(e => e.Leases > 0), _working.Used, _working.Budget,
                    _hostCopies?.Entries.Count ?? 0, _hostCopies?.Used ?? 0, _hostCopies?.Budget ?? 0);
        }
    }

    /// <summary>Loads every configured preload file (<see cref="LoraCacheOptions.Preload"/> plus <paramref name="paths"/>).
    /// A file that fails is logged and skipped; the failures are returned.</summary>
    public async Task<IReadOnlyList<Exception>> PreloadAsync(IEnumerable<string>? paths = null, CancellationToken cancellationToken = default)
    {
        var failures = new List<Exception>();
        foreach (var path in _options.Preload.Concat(paths ?? []))
        {
            try
            {
                using var lease = await AcquireAsync(path, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _logger.LogWarning(e, "Preloading LoRA {Path} failed", path);
                failures.Add(e);
            }
        }
        return failures;
    }

    /// <summary>The adapter for a LoRA file, loaded and converted if not cached. Dispose the lease when the job ends.</summary>
    /// <exception cref="LoraFormatException">The file is unreadable or does not fit the model.</exception>
    public async Task<LoraLease> AcquireAsync(string path, CancellationToken cancellationToken = default)
    {
        var key = KeyOf(path);
        PendingLoad pending;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_working.TryGet(key, out var hit))
            {
                _hits++;
                hit.Leases++;
                return LeaseOf(hit);
            }
            _misses++;
            if (_pending.TryGetValue(key, out pending!))
            {
                _sharedLoads++;
            }
            else
            {
                pending = new PendingLoad();
                _pending[key] = pending;
                pending.Task = Task.Run(() => Load(key, path, pending));
            }
            // Counted now, so the entry is inserted already leased for every waiter and cannot be evicted in between.
            pending.Waiters++;
        }

        Result result;
        try
        {
            result = await pending.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Give back the lease taken for this waiter once the load ends.
            _ = pending.Task.ContinueWith(t =>
            {
                if (t.IsCompletedSuccessfully) Release(t.Result);
            }, TaskScheduler.Default);
            throw;
        }
        return result.Entry is not null
            ? LeaseOf(result.Entry)
            : new LoraLease(result.Uncached!, cached: false, () => ReleaseUncached(result));
    }

    private LoraLease LeaseOf(Entry entry) => new(entry.Adapter, cached: true, () => Release(new Result(entry, null, 0)));

    private void Release(Result result)
    {
        if (result.Entry is null)
        {
            ReleaseUncached(result);
            return;
        }
        lock (_gate) result.Entry.Leases--;
    }

    // An uncached adapter handed to several waiters is freed when the last of them lets go.
    private void ReleaseUncached(Result result)
    {
        if (Interlocked.Decrement(ref result.Holder!.Count) == 0) result.Uncached!.Dispose();
    }

    /// <summary>Drops unleased entries of one file (e.g. after the catalog saw it change). Returns whether any was dropped.</summary>
    public bool Invalidate(string path)
    {
        var full = Path.GetFullPath(path);
        lock (_gate)
        {
            bool any = false;
            foreach (var tier in Tiers())
                foreach (var key in tier.Entries.Keys.Where(k => k.StartsWith(full + "|", StringComparison.Ordinal)).ToList())
                    if (tier.Entries[key].Leases == 0)
                    {
                        tier.Remove(key);
                        any = true;
                    }
            return any;
        }
    }

    private IEnumerable<Tier> Tiers() => _hostCopies is null ? [_working] : [_working, _hostCopies];

    private sealed class PendingLoad
    {
        public Task<Result> Task = null!;
        public int Waiters;
    }

    private sealed class UncachedHolder
    {
        public int Count;
    }

    private sealed record Result(Entry? Entry, LoraAdapter? Uncached, int Waiters)
    {
        public UncachedHolder? Holder { get; init; }
    }

    private Result Load(string key, string path, PendingLoad pending)
    {
        try
        {
            // Room is made before reading (from the header's size bound), so memory never holds the new adapter
            // and the entries it replaces at once.
            long estimate = LoraLoader.Inspect(path, _targets).EstimatedBytes(ElementSize(_dtype));
            bool reserved;
            lock (_gate) reserved = Reserve(_working, estimate);
            LoraAdapter adapter;
            try
            {
                adapter = _hostCopies is null ? LoadFromDisk(path, _device) : LoadViaHostCopy(key, path, estimate);
            }
            catch
            {
                if (reserved) lock (_gate) _working.Reserved -= estimate;
                throw;
            }
            lock (_gate)
            {
                _pending.Remove(key);
                if (reserved) _working.Reserved -= estimate;
                int waiters = pending.Waiters;
                if (reserved && !_disposed && MakeRoom(_working, adapter.Bytes) && _working.Add(key, adapter, waiters, OnUnexpectedEviction))
                    return new Result(_working.Entries[key], null, waiters);
                _uncached++;
                _logger.LogWarning("LoRA {Path} ({Bytes} bytes) does not fit the {Tier} cache budget of {Budget} bytes ({Leased} bytes leased); using it uncached",
                    path, adapter.Bytes, _working.Name, _working.Budget, _working.LeasedBytes);
                return new Result(null, adapter, waiters) { Holder = new UncachedHolder { Count = waiters } };
            }
        }
        catch (Exception e)
        {
            lock (_gate)
            {
                _pending.Remove(key);
                _loadFailures++;
            }
            _logger.LogWarning(e, "Loading LoRA {Path} failed", path);
            throw;
        }
    }

    private LoraAdapter LoadFromDisk(string path, Device device)
    {
        var adapter = LoraLoader.Load(path, _targets, _dtype, device);
        lock (_gate) _diskLoads++;
        _logger.LogInformation("Loaded LoRA {Path} ({Formats}, {Modules} modules, {Bytes} bytes) to {Device}",
            path, string.Join("+", adapter.Formats), adapter.Modules.Count, adapter.Bytes, device);
        return adapter;
    }

    // Accelerator model: the host copy is looked up (or loaded and kept) first, then uploaded.
    private LoraAdapter LoadViaHostCopy(string key, string path, long estimate)
    {
        var host = _hostCopies!;
        Entry? copy = null;
        bool reserved = false;
        lock (_gate)
        {
            if (host.TryGet(key, out var found))
            {
                copy = found;
                copy.Leases++;
                _hostCopyHits++;
            }
            else reserved = Reserve(host, estimate);
        }
        if (copy is null)
        {
            LoraAdapter loaded;
            try
            {
                loaded = LoadFromDisk(path, CPU);
            }
            finally
            {
                if (reserved) lock (_gate) host.Reserved -= estimate;
            }
            lock (_gate)
            {
                if (reserved && MakeRoom(host, loaded.Bytes) && host.Add(key, loaded, 1, OnUnexpectedEviction)) copy = host.Entries[key];
            }
            if (copy is null)
            {
                try { return loaded.CopyTo(_device); }
                finally { loaded.Dispose(); }
            }
        }
        try
        {
            return copy.Adapter.CopyTo(_device);
        }
        finally
        {
            lock (_gate) copy.Leases--;
        }
    }

    // Sets `bytes` aside for a load in progress, evicting as needed; false if it cannot fit.
    private bool Reserve(Tier tier, long bytes)
    {
        if (!MakeRoom(tier, bytes)) return false;
        tier.Reserved += bytes;
        return true;
    }

    // Evicts least recently used unleased entries until `bytes` more fit beside the entries and reservations.
    private bool MakeRoom(Tier tier, long bytes)
    {
        if (bytes > tier.Budget) return false;
        while (tier.Used + tier.Reserved + bytes > tier.Budget)
        {
            var victim = tier.Entries.Values.Where(e => e.Leases == 0).MinBy(e => e.LastUse);
            if (victim is null) return false;
            tier.Remove(victim.Key);
            _evictions++;
            _logger.LogDebug("Evicted LoRA {Key} ({Bytes} bytes) from the {Tier} cache", victim.Key, victim.Bytes, tier.Name);
        }
        return true;
    }

    private void OnUnexpectedEviction(string tier, string key, EvictionReason reason) =>
        _logger.LogWarning("LoRA cache entry {Key} left the {Tier} cache unexpectedly ({Reason})", key, tier, reason);

    private static string KeyOf(string path)
    {
        var full = Path.GetFullPath(path);
        var info = new FileInfo(full);
        // A missing file gets a key anyway; the load reports it.
        return info.Exists ? $"{full}|{info.Length}|{info.LastWriteTimeUtc.Ticks}" : $"{full}|missing";
    }

    private static int ElementSize(ScalarType t) => t switch
    {
        ScalarType.Float64 => 8,
        ScalarType.Float32 => 4,
        _ => 2,
    };

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var tier in Tiers()) tier.Dispose();
        }
    }

    private sealed class Entry(string key, LoraAdapter adapter, long tick)
    {
        public string Key { get; } = key;
        public LoraAdapter Adapter { get; } = adapter;
        public long Bytes => Adapter.Bytes;
        public int Leases;
        public long LastUse = tick;
    }

    /// <summary>One budgeted store. Every member is used under the cache's lock.</summary>
    private sealed class Tier : IDisposable
    {
        private readonly MemoryCache _store;
        private long _tick;

        public Tier(string name, long budget)
        {
            Name = name;
            Budget = budget;
            // Sizes are bytes. Compaction is never needed: MakeRoom keeps the total under the limit.
            _store = new MemoryCache(new MemoryCacheOptions { SizeLimit = Math.Max(budget, 1), CompactionPercentage = 0.0 });
        }

        public string Name { get; }
        public long Budget { get; }
        public long Used { get; private set; }
        /// <summary>Bytes set aside for loads in progress.</summary>
        public long Reserved { get; set; }
        public Dictionary<string, Entry> Entries { get; } = new(StringComparer.Ordinal);
        public long LeasedBytes => Entries.Values.Where(e => e.Leases > 0).Sum(e => e.Bytes);

        public bool TryGet(string key, out Entry entry)
        {
            if (_store.TryGetValue(key, out Entry? found) && found is not null)
            {
                found.LastUse = ++_tick;
                entry = found;
                return true;
            }
            entry = null!;
            return false;
        }

        public bool Add(string key, LoraAdapter adapter, int leases, Action<string, string, EvictionReason> unexpected)
        {
            var entry = new Entry(key, adapter, ++_tick) { Leases = leases };
            var options = new MemoryCacheEntryOptions { Size = Math.Max(adapter.Bytes, 1), Priority = CacheItemPriority.NeverRemove };
            options.RegisterPostEvictionCallback((k, _, reason, _) =>
            {
                if (reason is not (EvictionReason.Removed or EvictionReason.Replaced)) unexpected(Name, (string)k, reason);
            });
            _store.Set(key, entry, options);
            // MemoryCache silently drops an entry that would exceed SizeLimit; MakeRoom should have prevented that.
            if (!_store.TryGetValue(key, out Entry? stored) || !ReferenceEquals(stored, entry)) return false;
            Entries[key] = entry;
            Used += entry.Bytes;
            return true;
        }

        public void Remove(string key)
        {
            if (!Entries.Remove(key, out var entry)) return;
            _store.Remove(key);
            Used -= entry.Bytes;
            // Freed now, not in MemoryCache's asynchronous eviction callback, so memory follows the accounting.
            entry.Adapter.Dispose();
        }

        public void Dispose()
        {
            foreach (var key in Entries.Keys.ToList()) Remove(key);
            _store.Dispose();
        }
    }
}
