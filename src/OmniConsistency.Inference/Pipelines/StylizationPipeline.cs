using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using OmniConsistency.Inference.Imaging;
using OmniConsistency.Inference.Lora;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Pipelines;

/// <summary>
/// One stylization request on one loaded <see cref="FluxModelSet"/>: photo bytes → decode with guards → condition image
/// (stretch = reference, pad = keep aspect) → prompt = styles' trigger words + user prompt → output size → seeded noise →
/// style LoRAs from the <see cref="LoraAdapterCache"/> (leases held for the generation, applied with the
/// <see cref="LoraApplicationPolicy"/>, detached in finally) → OmniConsistency generation (its condition K/V bank owned
/// by the generation) with per-step progress and cancellation between steps → PNG/JPEG/WebP bytes.
/// No tensor crosses this class's API. Generations must not overlap on one model set (style adapters are attached to
/// its modules): <see cref="StylizationEngine"/> runs one at a time.
/// </summary>
public sealed class StylizationPipeline
{
    private readonly StylizationEngineOptions _options;
    private readonly ImageCodec _codec;
    private readonly LoraAdapterCache? _cache;
    private readonly PromptEmbeddingCache? _promptCache;
    private readonly LoraApplicationPolicy _policy;
    private readonly ILogger _logger;

    /// <param name="promptCache">Prompt embeddings kept across generations (null: each generation encodes).</param>
    public StylizationPipeline(FluxModelSet models, StylizationEngineOptions options, StyleCatalog? catalog, LoraAdapterCache? cache, ILogger? logger = null,
        PromptEmbeddingCache? promptCache = null)
    {
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(options);
        if (catalog is not null && cache is null) throw new ArgumentException("A style catalog needs a LoRA cache to load its styles.", nameof(cache));
        if (cache is not null && (cache.DType != models.DType || cache.Device.type != models.Device.type || cache.Device.index != models.Device.index))
            throw new ArgumentException($"The LoRA cache holds {cache.DType} adapters on {cache.Device}, the model is {models.DType} on {models.Device}.", nameof(cache));
        Models = models;
        _options = options;
        _codec = new ImageCodec(options.ImageLimits);
        Catalog = catalog;
        _cache = cache;
        _promptCache = promptCache;
        _policy = options.LoraPolicy;
        _logger = logger ?? NullLogger.Instance;
        Planner = new StylizationPlanner(options, _codec, catalog);
    }

    public FluxModelSet Models { get; }
    public StyleCatalog? Catalog { get; }
    public StylizationPlanner Planner { get; }

    /// <summary>Live tensors the last generation left on its thread (DisposeScope statistics) beyond those the prompt cache
    /// took over (<see cref="PromptEmbeddingCache.ThreadRetainedTensorCount"/>); 0 unless something leaks.</summary>
    public long LastGenerationLiveTensorDelta { get; private set; }

    /// <summary>Validates and resolves a request (see <see cref="StylizationPlanner"/>).</summary>
    public StylizationPlan Plan(StylizationRequest request) => Planner.Plan(request);

    /// <summary>
    /// Runs a request: leases its style LoRAs (loading them if needed), then runs <see cref="Generate"/> synchronously,
    /// from start to end on one thread (dispose scopes are per thread): the calling thread when the leases are at hand
    /// (cache hits), otherwise the thread-pool thread the load completed on. Callers that must not block a pool thread
    /// for the generation's duration call it from a dedicated thread, as the service's worker does.
    /// </summary>
    public async Task<StylizationResult> RunAsync(StylizationRequest request, IProgress<StylizationProgress>? progress, CancellationToken cancellationToken)
    {
        var plan = Plan(request);
        var leases = new List<LoraLease>();
        try
        {
            foreach (var style in plan.Styles) leases.Add(await AcquireAsync(style.Style, cancellationToken).ConfigureAwait(false));
            var adapters = plan.Styles.Select((s, i) => (leases[i].Adapter, s.Weight)).ToList();
            return Generate(plan, request.Image, adapters, progress, cancellationToken);
        }
        finally
        {
            foreach (var lease in leases) lease.Dispose();
        }
    }

    private async Task<LoraLease> AcquireAsync(StyleEntry style, CancellationToken cancellationToken)
    {
        try
        {
            return await _cache!.AcquireAsync(style.LoraPath, cancellationToken).ConfigureAwait(false);
        }
        catch (LoraFormatException e)
        {
            // The catalog lists the file but it does not fit this model: the request cannot run with this style.
            _logger.LogWarning(e, "Style {Style} cannot be loaded", style.Name);
            throw new StylizationRequestException("style-unavailable", $"Style '{style.Name}' cannot be used with this model: {e.Message}", e);
        }
    }

    /// <summary>
    /// The generation itself, synchronous on the calling thread. <paramref name="styles"/> are the plan's style adapters
    /// (in the model's dtype and device) with their weights, kept alive by the caller for the duration.
    /// </summary>
    public StylizationResult Generate(StylizationPlan plan, byte[] image, IReadOnlyList<(LoraAdapter Adapter, double Weight)> styles,
        IProgress<StylizationProgress>? progress, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        long liveBefore = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        long retainedBefore = PromptEmbeddingCache.ThreadRetainedTensorCount;
        try
        {
            cancellationToken.ThrowIfCancellationRequested();
            var photo = _codec.Decode(image);
            var (width, height) = Planner.OutputSizeFor(plan, photo.Width, photo.Height);
            var condition = ConditionImage.Fit(photo, plan.CondSize, plan.ConditionFit);

            var set = new LoraAdapterSet();
            foreach (var (adapter, weight) in styles) set.Add(adapter, weight);
            var mode = _policy.Choose(set, Models.TransformerTargets, forwardPasses: plan.Steps + 1, Models.ClipTargets);
            var warnings = new List<string>();
            byte[] encoded;
            using (set.IsEmpty ? null : set.Apply(mode, Models.TransformerTargets, Models.ClipTargets))
            using (var scope = NewDisposeScope())
            using (var noise = GenerationNoise.FromSeed(plan.Seed))
            {
                var inputs = new OmniConsistencyInputs
                {
                    Prompt = plan.EffectivePrompt,
                    Width = width,
                    Height = height,
                    Steps = plan.Steps,
                    GuidanceScale = plan.Guidance,
                    ConditionImage = ImageTensors.ToTensor(condition, Models.Device),
                    TextFreeWarmup = _options.TextFreeWarmup,
                    TextEncoderState = TextEncoderState(set, mode),
                };
                using var output = new OmniConsistencyPipeline(Models, _promptCache).Run(inputs, noise, progress is null ? null : progress.Report, cancellationToken);
                warnings.AddRange(output.TruncationWarnings());
                var rgb = ImageTensors.ToImages(output.Image)[0];
                encoded = _codec.Encode(rgb, plan.OutputFormat, _options.EncodeOptions);
            }
            warnings.AddRange(styles.SelectMany(s => s.Adapter.Warnings).Distinct());
            return new StylizationResult(encoded, ImageCodec.ContentType(plan.OutputFormat), width, height, plan.Seed, plan.EffectivePrompt, warnings, clock.Elapsed);
        }
        finally
        {
            LastGenerationLiveTensorDelta = DisposeScopeManager.Statistics.ThreadTotalLiveCount - liveBefore
                - (PromptEmbeddingCache.ThreadRetainedTensorCount - retainedBefore);
            if (LastGenerationLiveTensorDelta != 0)
                _logger.LogWarning("A generation left {Count} live tensors on its thread", LastGenerationLiveTensorDelta);
        }
    }

    /// <summary>
    /// The style adapters that change the text encoders' output in this generation, for the prompt-cache key: each
    /// adapter's identity and weight in order, and whether merged or run-time (they round differently). Null when none
    /// acts on CLIP (no text-encoder modules, zero weight, or CLIP not adaptable: another dtype/device than the model).
    /// </summary>
    internal string? TextEncoderState(LoraAdapterSet set, LoraApplication mode)
    {
        if (Models.ClipTargets is null) return null;
        var parts = set.Entries
            .Where(e => e.Weight * set.LoraScale != 0 && e.Adapter.ModulesOf(LoraComponent.TextEncoder).Any(m => m.Scale != 0))
            .Select(e => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{PromptEmbeddingCache.IdentityOf(e.Adapter)}x{e.Weight:R}"))
            .ToList();
        return parts.Count == 0 ? null : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{mode} lora_scale {set.LoraScale:R}: {string.Join(", ", parts)}");
    }
}
