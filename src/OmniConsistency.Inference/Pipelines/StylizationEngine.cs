using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using OmniConsistency.Inference.BuiltIn;
using OmniConsistency.Inference.Lora;
using TorchSharp;

namespace OmniConsistency.Inference.Pipelines;

/// <summary>
/// The engine the service calls (<see cref="IStylizationEngine"/>): one loaded model set, its style catalog and LoRA
/// cache, request validation against the configured limits, and one generation at a time on the device (requests wait
/// on a <see cref="SemaphoreSlim"/>). <see cref="RunAsync"/> computes synchronously on the calling thread when the
/// device is free and its styles are cached (call it from a dedicated thread, as the service's worker does); after
/// waiting for the device or a LoRA load it continues on the thread-pool thread that resumed it. Thread-safe.
/// </summary>
public sealed class StylizationEngine : IStylizationEngine, IDisposable
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly StylizationPipeline _pipeline;
    private readonly LoraAdapterCache? _cache;
    private readonly PromptEmbeddingCache _promptCache;
    private readonly bool _ownsModels;
    private readonly ILogger _logger;
    // LoRA cache counters for the service's /metrics (it listens to meters named "OmniConsistency.*"); published as
    // deltas of the cache's own snapshot after each generation and preload. Plus the gauge lora_cache_bytes.
    private readonly Meter _meter = new("OmniConsistency.Inference");
    private readonly Counter<long> _loraHits, _loraMisses, _loraEvictions, _loraDiskLoads;
    private readonly Counter<long> _promptHits, _promptMisses, _promptEvictions;
    private LoraCacheMetrics? _publishedMetrics;
    private PromptCacheMetrics? _publishedPromptMetrics;
    private readonly object _metricsGate = new();
    private int _disposed;

    /// <summary>
    /// Serves an already loaded model set. <paramref name="styleFolder"/> is the style catalog (null: no styles).
    /// With <paramref name="ownsModels"/> the engine disposes the model set.
    /// </summary>
    public StylizationEngine(FluxModelSet models, StylizationEngineOptions options, string? styleFolder = null, bool builtIn = false,
        bool ownsModels = false, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        loggerFactory ??= NullLoggerFactory.Instance;
        _logger = loggerFactory.CreateLogger<StylizationEngine>();
        _loraHits = _meter.CreateCounter<long>("lora_cache_hits");
        _loraMisses = _meter.CreateCounter<long>("lora_cache_misses");
        _loraEvictions = _meter.CreateCounter<long>("lora_cache_evictions");
        _loraDiskLoads = _meter.CreateCounter<long>("lora_cache_disk_loads");
        // Bytes are a level, not a count: observed from the cache's snapshot when a listener collects.
        _meter.CreateObservableGauge("lora_cache_bytes", ObserveCacheBytes, unit: "By",
            description: "Bytes of converted style LoRAs held by the cache, per tier (working; host-copy on an accelerator)");
        _promptHits = _meter.CreateCounter<long>("prompt_cache_hits", description: "Prompt encodes served from the prompt-embedding cache");
        _promptMisses = _meter.CreateCounter<long>("prompt_cache_misses", description: "Prompt encodes that ran CLIP + T5 (or joined one in progress)");
        _promptEvictions = _meter.CreateCounter<long>("prompt_cache_evictions", description: "Prompt embeddings evicted to make room");
        _meter.CreateObservableGauge("prompt_cache_bytes", ObservePromptCacheBytes, unit: "By",
            description: "Bytes of prompt embeddings held by the prompt-embedding cache");
        _promptCache = new PromptEmbeddingCache(options.PromptCacheBytes);
        _ownsModels = ownsModels;
        Options = options;
        StyleCatalog? catalog = null;
        if (styleFolder is not null)
        {
            catalog = new StyleCatalog(new StyleCatalogOptions
            {
                Folder = styleFolder,
                RefreshInterval = options.StyleRefreshSeconds > 0 ? TimeSpan.FromSeconds(options.StyleRefreshSeconds) : null,
            }, loggerFactory.CreateLogger<StyleCatalog>());
            _cache = new LoraAdapterCache(models.LoraTargets, models.DType, models.Device, new LoraCacheOptions
            {
                HostBudgetBytes = options.LoraHostBudgetBytes,
                DeviceBudgetBytes = options.LoraDeviceBudgetBytes,
                Preload = options.PreloadStyles.Select(name => catalog.TryResolve(name, out var style)
                    ? style.LoraPath
                    : throw new ArgumentException($"PreloadStyles names '{name}', which is not a style of {catalog.Folder}.")).ToList(),
            }, loggerFactory.CreateLogger<LoraAdapterCache>());
        }
        _pipeline = new StylizationPipeline(models, options, catalog, _cache, loggerFactory.CreateLogger<StylizationPipeline>(), _promptCache);
        Info = new EngineInfo(models.Name, builtIn, models.Device.ToString(), DTypeName(models.DType),
            options.MaxSide - options.MaxSide % 16, options.MaxCondSize - options.MaxCondSize % 16);
    }

    /// <summary>
    /// Builds the engine from options: the configured model (diffusers folder and/or BFL single files), or, with none
    /// configured, the built-in random-weight model created in <see cref="StylizationEngineOptions.DataDirectory"/> with
    /// its demo style. Loading a real FLUX.1-dev takes minutes; call it from a background start-up task.
    /// </summary>
    public static StylizationEngine Create(StylizationEngineOptions options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        loggerFactory ??= NullLoggerFactory.Instance;
        var logger = loggerFactory.CreateLogger<StylizationEngine>();
        if (options.Threads is int threads) torch.set_num_threads(threads);

        FluxModelSetOptions modelOptions;
        string? styles = options.LoraFolder;
        bool builtIn = options.UsesBuiltInModel;
        if (builtIn)
        {
            var paths = BuiltInModel.EnsureCreated(options.DataDirectory, logger);
            logger.LogWarning("No model is configured: serving the built-in model with RANDOM weights from {Folder} (images will be noise-like). " +
                              "Set ModelPath (or TransformerPath/VaePath/TextEncodersPath) and ConsistencyLoraPath to serve FLUX.1-dev.", paths.Root);
            modelOptions = paths.ModelSetOptions(options.Device, options.DType) with
            {
                TextEncoderDevice = options.TextEncoderDevice,
                TextEncoderDType = options.TextEncoderDType,
            };
            styles ??= paths.StylesFolder;
        }
        else
        {
            modelOptions = new FluxModelSetOptions
            {
                ModelFolder = NullIfBlank(options.ModelPath),
                TransformerFile = NullIfBlank(options.TransformerPath),
                TransformerConfigFile = NullIfBlank(options.TransformerConfigPath),
                VaeFile = NullIfBlank(options.VaePath),
                VaeConfigFile = NullIfBlank(options.VaeConfigPath),
                TextEncodersFolder = NullIfBlank(options.TextEncodersPath),
                ConsistencyLoraFile = NullIfBlank(options.ConsistencyLoraPath),
                Device = options.Device,
                DType = options.DType,
                TextEncoderDevice = options.TextEncoderDevice,
                TextEncoderDType = options.TextEncoderDType,
            };
        }
        var models = FluxModelSet.Load(modelOptions);
        try
        {
            logger.LogInformation("Loaded model {Model} on {Device} ({DType}), text encoders on {EncoderDevice} ({EncoderDType}), in {Seconds:F1} s",
                models.Name, models.Device, models.DType, models.PromptEncoder.T5Device, models.PromptEncoder.T5DType, models.LoadTime.TotalSeconds);
            return new StylizationEngine(models, options, NullIfBlank(styles), builtIn, ownsModels: true, loggerFactory);
        }
        catch
        {
            models.Dispose();
            throw;
        }
    }

    public StylizationEngineOptions Options { get; }
    public EngineInfo Info { get; }
    public IReadOnlyList<StyleInfo> Styles => _pipeline.Catalog?.Styles ?? [];
    public FluxModelSet Models => _pipeline.Models;

    /// <summary>The LoRA cache's counters (null without a style folder).</summary>
    public LoraCacheMetrics? LoraCacheMetrics => _cache?.Metrics;

    /// <summary>The prompt-embedding cache's counters (disabled with <see cref="StylizationEngineOptions.PromptCacheBytes"/> = 0).</summary>
    public PromptCacheMetrics PromptCacheMetrics => _promptCache.Metrics;

    /// <summary>Live tensors the last generation left behind on its thread, beyond the prompt embeddings the cache keeps; 0 unless something leaks.</summary>
    public long LastGenerationLiveTensorDelta => _pipeline.LastGenerationLiveTensorDelta;

    /// <summary>Loads the configured <see cref="StylizationEngineOptions.PreloadStyles"/> into the LoRA cache; returns the failures.</summary>
    public async Task<IReadOnlyList<Exception>> PreloadStylesAsync(CancellationToken cancellationToken = default)
    {
        if (_cache is null) return [];
        var failures = await _cache.PreloadAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        PublishCacheCounters();
        return failures;
    }

    private void PublishCacheCounters()
    {
        lock (_metricsGate)
        {
            var prompt = _promptCache.Metrics;
            var published = _publishedPromptMetrics;
            _promptHits.Add(prompt.Hits - (published?.Hits ?? 0));
            _promptMisses.Add(prompt.Misses - (published?.Misses ?? 0));
            _promptEvictions.Add(prompt.Evictions - (published?.Evictions ?? 0));
            _publishedPromptMetrics = prompt;
        }
        if (_cache is null) return;
        lock (_metricsGate)
        {
            var now = _cache.Metrics;
            var before = _publishedMetrics;
            _loraHits.Add(now.Hits - (before?.Hits ?? 0));
            _loraMisses.Add(now.Misses - (before?.Misses ?? 0));
            _loraEvictions.Add(now.Evictions - (before?.Evictions ?? 0));
            _loraDiskLoads.Add(now.DiskLoads - (before?.DiskLoads ?? 0));
            _publishedMetrics = now;
        }
    }

    private IEnumerable<Measurement<long>> ObserveCacheBytes()
    {
        if (_cache is null || Volatile.Read(ref _disposed) != 0) return [];
        var m = _cache.Metrics;
        return
        [
            new Measurement<long>(m.Bytes, new KeyValuePair<string, object?>("tier", "working")),
            new Measurement<long>(m.HostCopyBytes, new KeyValuePair<string, object?>("tier", "host-copy")),
        ];
    }

    private IEnumerable<Measurement<long>> ObservePromptCacheBytes() =>
        Volatile.Read(ref _disposed) != 0 ? [] : [new Measurement<long>(_promptCache.Metrics.Bytes)];

    /// <summary>Rescans the style folder (new or removed LoRA files).</summary>
    public void RefreshStyles() => _pipeline.Catalog?.Refresh();

    public void Validate(StylizationRequest request)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        _pipeline.Plan(request);
    }

    public async Task<StylizationResult> RunAsync(StylizationRequest request, IProgress<StylizationProgress>? progress, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        // Bad requests fail before waiting for the device.
        _pipeline.Plan(request);
        // Uncontended: take the gate synchronously so the generation stays on the caller's thread.
        if (!_gate.Wait(0, CancellationToken.None)) await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            var result = await _pipeline.RunAsync(request, progress, cancellationToken).ConfigureAwait(false);
            _logger.LogInformation("Stylized {Width}x{Height}, {Steps} steps, styles [{Styles}] in {Ms:F0} ms",
                result.Width, result.Height, request.Steps, string.Join(", ", request.Styles.Select(s => $"{s.Name}:{s.Weight}")), result.InferenceTime.TotalMilliseconds);
            return result;
        }
        finally
        {
            _gate.Release();
            PublishCacheCounters();
        }
    }

    private static string DTypeName(torch.ScalarType dtype) => dtype switch
    {
        torch.ScalarType.Float32 => "float32",
        torch.ScalarType.BFloat16 => "bfloat16",
        torch.ScalarType.Float16 => "float16",
        torch.ScalarType.Float64 => "float64",
        _ => dtype.ToString().ToLowerInvariant(),
    };

    private static string? NullIfBlank(string? s) => string.IsNullOrWhiteSpace(s) ? null : s;

    /// <summary>Waits for a running generation to end, then frees the cache and (when owned) the models.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _gate.Wait();
        try
        {
            _cache?.Dispose();
            _promptCache.Dispose();
            _meter.Dispose();
            if (_ownsModels) _pipeline.Models.Dispose();
        }
        finally
        {
            _gate.Release();
        }
    }
}
