using System.Globalization;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Caching.Memory;
using OmniConsistency.Inference.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Pipelines;

/// <summary>
/// Prompt embeddings (T5 hidden states, CLIP pooled vector, text ids, truncation report) kept in memory, because a
/// stylization service encodes the same trigger words over and over and a T5-XXL forward costs far more than a lookup.
/// <list type="bullet">
/// <item>Key: the exact encoder input (CLIP and T5 prompt texts, max_sequence_length, images per prompt), the encoders'
///   identity, dtypes and devices, the output dtype/device, and what is attached to the text encoders (style LoRA
///   text-encoder adapters, <see cref="PromptCacheKey.TextEncoderState"/>).</item>
/// <item>Storage, size accounting and LRU order are a <see cref="MemoryCache"/> (<c>SizeLimit</c> = budget in bytes,
///   entry <c>Size</c> = its tensors' bytes). Before an insert the least recently used entries are compacted away until it
///   fits, so the budget is never exceeded; an entry larger than the budget is handed out uncached.</item>
/// <item>Entries are reference-counted: the cache holds one reference, each <see cref="PromptEmbeddingLease"/> one; the
///   tensors are freed when the last goes, so an evicted entry that a generation still uses lives until it ends.
///   A lease costs nothing; a clone per generation would copy 4-8 MB (see the prompt-cache benchmark).</item>
/// <item>Concurrent requests for one key share one encode.</item>
/// </list>
/// Cached tensors are detached from dispose scopes. Thread-safe.
/// </summary>
public sealed class PromptEmbeddingCache : IDisposable
{
    /// <summary>The tensors of one entry (prompt_embeds, pooled_prompt_embeds, text_ids).</summary>
    private const int TensorsPerEntry = 3;

    // Tensors created on this thread that caches keep alive, minus cached tensors freed on this thread: what a per-thread
    // live-tensor delta (DisposeScopeManager statistics) must subtract to still mean "leaked".
    [ThreadStatic] private static long t_retained;
    private static readonly ConditionalWeakTable<object, object> Identities = new();
    private static long s_nextIdentity;

    private readonly MemoryCache? _store;
    private readonly object _gate = new();
    private readonly Dictionary<PromptCacheKey, Entry> _entries = [];
    private readonly Dictionary<PromptCacheKey, TaskCompletionSource<Entry?>> _pending = [];
    private long _bytes, _hits, _misses, _sharedEncodes, _evictions, _uncached;
    private bool _disposed;

    /// <param name="budgetBytes">Bytes of embeddings kept; 0 disables caching (every request encodes).</param>
    public PromptEmbeddingCache(long budgetBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(budgetBytes);
        BudgetBytes = budgetBytes;
        // Compaction is ours (before each insert); MemoryCache's own would reject the insert and compact later.
        if (budgetBytes > 0) _store = new MemoryCache(new MemoryCacheOptions { SizeLimit = budgetBytes, CompactionPercentage = 0.0 });
    }

    public long BudgetBytes { get; }
    public bool Enabled => _store is not null;

    /// <summary>Tensors created on the calling thread that prompt caches now hold, minus cached tensors freed on it.
    /// Subtract its change from a change of <c>DisposeScopeManager.Statistics.ThreadTotalLiveCount</c> to count leaks only.</summary>
    public static long ThreadRetainedTensorCount => t_retained;

    public PromptCacheMetrics Metrics
    {
        get
        {
            lock (_gate) return new PromptCacheMetrics(_hits, _misses, _sharedEncodes, _evictions, _uncached, _entries.Count, _bytes, BudgetBytes);
        }
    }

    /// <summary>A process-unique number for an object (an encoder, a LoRA adapter), for cache keys; never reused.</summary>
    public static long IdentityOf(object o) =>
        (long)Identities.GetValue(o, _ => Interlocked.Increment(ref s_nextIdentity));

    /// <summary>
    /// The key of <see cref="PromptEncoder.Encode(IReadOnlyList{string}, IReadOnlyList{string}?, int, int)"/> on one prompt
    /// with outputs in <paramref name="dtype"/> on <paramref name="device"/>. <paramref name="prompt2"/> null or empty = <paramref name="prompt"/>
    /// (Python's <c>prompt_2 or prompt</c>).
    /// </summary>
    public static PromptCacheKey KeyFor(PromptEncoder encoder, string prompt, string? prompt2, int maxSequenceLength, int numImagesPerPrompt,
        ScalarType dtype, Device device, string? textEncoderState = null)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        ArgumentNullException.ThrowIfNull(prompt);
        var encoders = string.Create(CultureInfo.InvariantCulture,
            $"#{IdentityOf(encoder)} clip {encoder.ClipDType}@{encoder.ClipDevice} t5 {encoder.T5DType}@{encoder.T5Device}");
        return new PromptCacheKey(encoders, prompt, string.IsNullOrEmpty(prompt2) ? prompt : prompt2, maxSequenceLength, numImagesPerPrompt,
            $"{dtype}@{device}", textEncoderState ?? "");
    }

    /// <summary>
    /// Encodes <paramref name="prompt"/> and <paramref name="prompt2"/> with <paramref name="encoder"/> (outputs converted to
    /// <paramref name="dtype"/> on <paramref name="device"/>), or returns the cached result. Dispose the lease when the
    /// generation no longer uses the tensors; do not dispose <see cref="PromptEmbeddingLease.Prompt"/> itself.
    /// <paramref name="textEncoderState"/> identifies anything attached to the encoders that changes their output (null: the
    /// encoders as loaded).
    /// </summary>
    public PromptEmbeddingLease Acquire(PromptEncoder encoder, string prompt, string? prompt2, int maxSequenceLength, ScalarType dtype, Device device,
        string? textEncoderState = null, CancellationToken cancellationToken = default)
    {
        var key = KeyFor(encoder, prompt, prompt2, maxSequenceLength, 1, dtype, device, textEncoderState);
        return Acquire(key, () => EncodeFor(encoder, key, dtype, device), cancellationToken);
    }

    /// <summary>The uncached encode the cache performs on a miss (also used with caching disabled), on the calling thread.</summary>
    public static EncodedPrompt EncodeFor(PromptEncoder encoder, PromptCacheKey key, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var encoded = encoder.Encode([key.Prompt], [key.Prompt2], key.MaxSequenceLength, key.NumImagesPerPrompt);
        // The transformer's dtype and device (a no-op unless the text encoders live elsewhere, e.g. on the CPU in fp32).
        var result = new EncodedPrompt(encoded.PromptEmbeds.to(dtype, device), encoded.PooledPromptEmbeds.to(dtype, device),
            encoded.TextIds.to(dtype, device), encoded.ClipTokens, encoded.T5Tokens);
        result.PromptEmbeds.MoveToOuterDisposeScope();
        result.PooledPromptEmbeds.MoveToOuterDisposeScope();
        result.TextIds.MoveToOuterDisposeScope();
        return result;
    }

    /// <summary>Looks <paramref name="key"/> up; on a miss runs <paramref name="encode"/> (once for concurrent callers of one key).</summary>
    public PromptEmbeddingLease Acquire(PromptCacheKey key, Func<EncodedPrompt> encode, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(encode);
        if (_store is null)
        {
            lock (_gate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                _misses++;
            }
            return new PromptEmbeddingLease(Create(key, encode), hit: false);
        }
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            TaskCompletionSource<Entry?>? inProgress;
            bool owner = false;
            lock (_gate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (_store.TryGetValue(key, out Entry? cached) && cached is not null && cached.TryAddReference())
                {
                    _hits++;
                    return new PromptEmbeddingLease(cached, hit: true);
                }
                if (!_pending.TryGetValue(key, out inProgress))
                {
                    _pending[key] = inProgress = new TaskCompletionSource<Entry?>(TaskCreationOptions.RunContinuationsAsynchronously);
                    _misses++;
                    owner = true;
                }
            }
            if (!owner)
            {
                // Another caller is encoding this key: share its result; if it failed (or is already freed), try again.
                var entry = inProgress.Task.WaitAsync(cancellationToken).GetAwaiter().GetResult();
                if (entry is null || !entry.TryAddReference()) continue;
                lock (_gate)
                {
                    _misses++;
                    _sharedEncodes++;
                }
                return new PromptEmbeddingLease(entry, hit: false);
            }
            Entry? created = null;
            try
            {
                created = Create(key, encode);
                try
                {
                    Store(created);
                }
                catch
                {
                    created.Release();
                    created = null;
                    throw;
                }
                return new PromptEmbeddingLease(created, hit: false);
            }
            finally
            {
                lock (_gate) _pending.Remove(key);
                inProgress.TrySetResult(created);
            }
        }
    }

    private static Entry Create(PromptCacheKey key, Func<EncodedPrompt> encode)
    {
        var prompt = encode();
        prompt.PromptEmbeds.DetachFromDisposeScope();
        prompt.PooledPromptEmbeds.DetachFromDisposeScope();
        prompt.TextIds.DetachFromDisposeScope();
        t_retained += TensorsPerEntry;
        // The creator's reference, handed to its lease.
        return new Entry(key, prompt);
    }

    /// <summary>Adds the cache's reference to a fresh entry, compacting least recently used entries until it fits.</summary>
    private void Store(Entry entry)
    {
        lock (_gate)
        {
            if (_disposed || entry.Bytes > BudgetBytes)
            {
                _uncached++;
                return;
            }
            while (_bytes + entry.Bytes > BudgetBytes && _entries.Count > 0)
            {
                int before = _entries.Count;
                // One least recently used entry per round (Compact removes ⌊count·percentage⌋ entries, oldest access first).
                _store!.Compact(Math.Min(1.0, 1.5 / _store.Count));
                SweepRemoved();
                if (_entries.Count == before) break;
            }
            if (_bytes + entry.Bytes > BudgetBytes)
            {
                _uncached++;
                return;
            }
            if (_entries.TryGetValue(entry.Key, out var stale)) Remove(stale);
            entry.TryAddReference();
            var options = new MemoryCacheEntryOptions { Size = Math.Max(entry.Bytes, 1) };
            options.RegisterPostEvictionCallback((_, value, _, _) =>
            {
                lock (_gate) Remove((Entry)value!);
            });
            _entries[entry.Key] = entry;
            _bytes += entry.Bytes;
            entry.InCache = true;
            _store!.Set(entry.Key, entry, options);
        }
    }

    /// <summary>Releases (now, not in MemoryCache's asynchronous callback) the entries compaction took out of the store.</summary>
    private void SweepRemoved()
    {
        var kept = _store!.Keys.ToHashSet();
        foreach (var entry in _entries.Values.Where(e => !kept.Contains(e.Key)).ToList())
        {
            _evictions++;
            Remove(entry);
        }
    }

    /// <summary>Drops the cache's reference (under the lock); idempotent.</summary>
    private void Remove(Entry entry)
    {
        if (!entry.InCache) return;
        entry.InCache = false;
        if (_entries.TryGetValue(entry.Key, out var current) && ReferenceEquals(current, entry)) _entries.Remove(entry.Key);
        _bytes -= entry.Bytes;
        entry.Release();
    }

    /// <summary>Frees every entry no generation uses (the others when their leases end).</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var entry in _entries.Values.ToList()) Remove(entry);
            _store?.Dispose();
        }
    }

    internal sealed class Entry(PromptCacheKey key, EncodedPrompt prompt)
    {
        private int _references = 1;

        public PromptCacheKey Key { get; } = key;
        public EncodedPrompt Prompt { get; } = prompt;
        public long Bytes { get; } = BytesOf(prompt.PromptEmbeds) + BytesOf(prompt.PooledPromptEmbeds) + BytesOf(prompt.TextIds);
        /// <summary>Whether the cache holds a reference (guarded by the cache's lock).</summary>
        public bool InCache { get; set; }

        /// <summary>False once the count has reached 0 (the tensors are freed or being freed).</summary>
        public bool TryAddReference()
        {
            while (true)
            {
                int n = Volatile.Read(ref _references);
                if (n == 0) return false;
                if (Interlocked.CompareExchange(ref _references, n + 1, n) == n) return true;
            }
        }

        public void Release()
        {
            if (Interlocked.Decrement(ref _references) != 0) return;
            Prompt.Dispose();
            t_retained -= TensorsPerEntry;
        }

        private static long BytesOf(Tensor t) => t.numel() * t.ElementSize;
    }
}

/// <summary>What a prompt encode depends on; equal keys give bit-identical embeddings.</summary>
/// <param name="Encoders">The encoders' identity, dtypes and devices.</param>
/// <param name="Prompt">The CLIP prompt.</param>
/// <param name="Prompt2">The T5 prompt (already defaulted to <paramref name="Prompt"/>).</param>
/// <param name="Output">The dtype and device the outputs are converted to.</param>
/// <param name="TextEncoderState">Adapters attached to the text encoders (identity, weight, how applied); "" for none.</param>
public sealed record PromptCacheKey(string Encoders, string Prompt, string Prompt2, int MaxSequenceLength, int NumImagesPerPrompt, string Output,
    string TextEncoderState);

/// <summary>A generation's hold on prompt embeddings: the tensors stay valid until it is disposed.</summary>
public sealed class PromptEmbeddingLease : IDisposable
{
    private PromptEmbeddingCache.Entry? _entry;

    internal PromptEmbeddingLease(PromptEmbeddingCache.Entry entry, bool hit)
    {
        _entry = entry;
        Prompt = entry.Prompt;
        Hit = hit;
    }

    /// <summary>The embeddings, in the requested dtype and device. Owned by the cache: do not dispose.</summary>
    public EncodedPrompt Prompt { get; }
    /// <summary>True when served from the cache without encoding.</summary>
    public bool Hit { get; }

    public void Dispose() => Interlocked.Exchange(ref _entry, null)?.Release();
}

/// <summary>A snapshot of a <see cref="PromptEmbeddingCache"/>'s counters and size.</summary>
/// <param name="Hits">Requests served from the cache.</param>
/// <param name="Misses">Requests that encoded (or joined an encode in progress: <paramref name="SharedEncodes"/>).</param>
/// <param name="Evictions">Entries removed to make room.</param>
/// <param name="Uncached">Encodes handed out without being kept (larger than the whole budget); with caching disabled
/// every request counts as a miss only.</param>
public sealed record PromptCacheMetrics(long Hits, long Misses, long SharedEncodes, long Evictions, long Uncached, int Entries, long Bytes, long BudgetBytes);
