using Microsoft.Extensions.Options;
using OmniConsistency.Api.Endpoints;
using OmniConsistency.Api.Options;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Engine;

/// <summary>What accepting a submission needs from the model side: size limits, the style catalog and request validation.</summary>
public interface ISubmissionCatalog
{
    EngineInfo Info { get; }
    /// <summary>What submissions are checked against here (engine and service limits together).</summary>
    SubmissionLimits Limits { get; }
    IReadOnlyList<StyleInfo> Styles { get; }
    /// <summary>Throws <see cref="StylizationRequestException"/> when the request can't run.</summary>
    void Validate(StylizationRequest request);
}

/// <summary>
/// Where the API gets its <see cref="ISubmissionCatalog"/>: the loaded engine in the all role (<see cref="EngineCatalogSource"/>),
/// the style folder in the api role, which never loads the model (<see cref="FolderCatalogSource"/>).
/// </summary>
public interface ISubmissionCatalogSource
{
    /// <summary>Null while unavailable (model still loading, failed, folder unreadable).</summary>
    ISubmissionCatalog? Current { get; }
    /// <summary>The 503 to answer while <see cref="Current"/> is null.</summary>
    ApiProblemException Unavailable();
    /// <summary><see cref="Current"/>'s limits, or, while it is unavailable, the configured ones (known without the model).</summary>
    SubmissionLimits Limits { get; }
    /// <summary>The model as this process sees it.</summary>
    ModelStatus Model { get; }
}

/// <summary>The model: <paramref name="State"/> is ready (with name, built-in flag, device, dtype), loading, failed
/// (with <paramref name="Detail"/>) or "not loaded: api role".</summary>
public sealed record ModelStatus(string State, string? Name = null, bool? BuiltIn = null, string? Device = null, string? DType = null, string? Detail = null)
{
    public const string ApiRole = "not loaded: api role";
}

public static class SubmissionCatalogSourceExtensions
{
    public static ISubmissionCatalog Require(this ISubmissionCatalogSource source) => source.Current ?? throw source.Unavailable();
}

/// <summary>
/// The loaded engine answers for itself. Its limits are its own options when it is this build's
/// <see cref="StylizationEngine"/>; an engine registered through the extension point (or one still loading) is held to
/// the configured Omni:Engine limits and its reported MaxSide/MaxCondSize.
/// </summary>
public sealed class EngineCatalogSource(EngineHost host, IOptions<EngineCatalogOptions> catalogOptions, IOptions<LimitsOptions> limitsOptions)
    : ISubmissionCatalogSource
{
    private readonly SubmissionLimits _configured =
        SubmissionLimits.Combine(catalogOptions.Value.ToEngineOptions(limitsOptions.Value), null, limitsOptions.Value);

    private sealed class View(IStylizationEngine engine, SubmissionLimits limits) : ISubmissionCatalog
    {
        public IStylizationEngine Engine => engine;
        public EngineInfo Info => engine.Info;
        public SubmissionLimits Limits => limits;
        public IReadOnlyList<StyleInfo> Styles => engine.Styles;
        public void Validate(StylizationRequest request) => engine.Validate(request);
    }

    private View? _view;

    public ISubmissionCatalog? Current
    {
        get
        {
            var engine = host.Engine;
            if (engine is null) return null;
            var view = _view;
            if (view is null || !ReferenceEquals(view.Engine, engine)) _view = view = new View(engine, LimitsOf(engine));
            return view;
        }
    }

    public SubmissionLimits Limits => Current?.Limits ?? _configured;

    public ModelStatus Model => host.Engine is { Info: var info }
        ? new ModelStatus("ready", info.ModelName, info.BuiltIn, info.Device, info.DType)
        : host.State == EngineState.Loading ? new ModelStatus("loading") : new ModelStatus("failed", Detail: host.FailureReason);

    private SubmissionLimits LimitsOf(IStylizationEngine engine) => SubmissionLimits.Combine(
        engine is StylizationEngine own ? own.Options : catalogOptions.Value.ToEngineOptions(limitsOptions.Value), engine.Info, limitsOptions.Value);

    public ApiProblemException Unavailable() => new(503, "engine-unavailable", "Engine unavailable",
        host.State == EngineState.Loading ? "The model is still loading; retry shortly." : host.FailureReason ?? "No engine.",
        retryAfter: TimeSpan.FromSeconds(10));
}

/// <summary>
/// The api role's catalog, without the model: styles are the LoRA files of the engine's folder
/// (<see cref="EngineCatalogOptions.LoraFolder"/>, read with the engine's own <see cref="StyleCatalog"/>, so names,
/// sidecars and path rules are the same as in the workers) and sizes, steps and guidance are checked against the
/// engine's limits (the same Omni:Engine keys). The photo itself is checked by the submission validator (header
/// identify + full decode) in every role. What only the loaded model can tell (a LoRA file that does not fit the
/// model) fails the job in the worker with the engine's error type instead of failing the submission. The folder is
/// listed again every <see cref="RefreshInterval"/>, so styles added to the volume appear without a restart.
/// </summary>
public sealed class FolderCatalogSource : ISubmissionCatalogSource
{
    public static readonly TimeSpan RefreshInterval = TimeSpan.FromSeconds(30);
    private readonly EngineCatalogOptions _options;
    private readonly SubmissionLimits _limits;
    private readonly TimeProvider _time;
    private readonly ILogger<FolderCatalogSource> _logger;
    private readonly Lock _gate = new();
    private Snapshot? _snapshot;
    private StyleCatalog? _folder;

    private sealed record Snapshot(FolderCatalog? Catalog, string? Error, DateTimeOffset At);

    public FolderCatalogSource(IOptions<EngineCatalogOptions> options, IOptions<LimitsOptions> limits, TimeProvider time, ILogger<FolderCatalogSource> logger)
    {
        _options = options.Value;
        _limits = SubmissionLimits.Combine(_options.ToEngineOptions(limits.Value), null, limits.Value);
        _time = time;
        _logger = logger;
        if (string.IsNullOrWhiteSpace(_options.LoraFolder))
            logger.LogWarning("api role without Omni:Engine:LoraFolder: no styles are offered, only base-model jobs are accepted");
    }

    public ISubmissionCatalog? Current => Load().Catalog;

    public SubmissionLimits Limits => _limits;

    public ModelStatus Model { get; } = new(ModelStatus.ApiRole);

    /// <summary>For /readyz: "N styles" or what is wrong with the folder.</summary>
    public string Describe()
    {
        var s = Load();
        return s.Catalog is { } c ? $"{c.Styles.Count} styles" : $"error: {s.Error}";
    }

    public ApiProblemException Unavailable() => new(503, "engine-unavailable", "Style catalog unavailable",
        Load().Error ?? "The style catalog is not available.", retryAfter: TimeSpan.FromSeconds(10));

    private Snapshot Load()
    {
        var now = _time.GetUtcNow();
        var s = _snapshot;
        if (s is not null && now - s.At < RefreshInterval) return s;
        lock (_gate)
        {
            s = _snapshot;
            if (s is not null && now - s.At < RefreshInterval) return s;
            try
            {
                if (_folder is null && !string.IsNullOrWhiteSpace(_options.LoraFolder))
                    _folder = new StyleCatalog(new StyleCatalogOptions { Folder = _options.LoraFolder }, _logger);
                else _folder?.Refresh();
                _snapshot = new Snapshot(new FolderCatalog(_limits, _folder) { Styles = _folder?.Styles ?? [] }, null, now);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                _logger.LogError("Style folder {Folder} is not readable: {Error}", _options.LoraFolder, ex.Message);
                _snapshot = new Snapshot(null, $"the style folder '{_options.LoraFolder}' is not readable: {ex.Message}", now);
            }
            return _snapshot;
        }
    }

    private sealed record FolderCatalog(SubmissionLimits Limits, StyleCatalog? Folder) : ISubmissionCatalog
    {
        public EngineInfo Info { get; } = new(ModelStatus.ApiRole, BuiltIn: false, Device: "none", DType: "none", Limits.Size.MaxSide, Limits.CondSize.Max);
        public IReadOnlyList<StyleInfo> Styles { get; init; } = [];

        // The submission validator has checked the fields against Limits already; this is the engine's Validate as far
        // as it can be done without the model (the styles resolve, the size fits the pixel limit).
        public void Validate(StylizationRequest request)
        {
            foreach (var s in request.Styles)
            {
                if (Folder is null) throw new StylizationRequestException("unknown-style", $"There is no style named '{s.Name}' (no style folder is configured).");
                Folder.Resolve(s.Name);
            }
            var size = Limits.Size;
            CheckSide("width", request.Width, size.MaxSide);
            CheckSide("height", request.Height, size.MaxSide);
            CheckSide("condSize", request.CondSize, Limits.CondSize.Max);
            if (request.Width is { } w && request.Height is { } h && (long)w * h > size.MaxPixels)
                throw new StylizationRequestException("invalid-size", $"{w}x{h} is more than the {size.MaxPixels} pixels allowed.");
            if (request.Steps < Limits.Steps.Min || request.Steps > Limits.Steps.Max)
                throw new StylizationRequestException("validation-error", $"steps must be between {Limits.Steps.Min} and {Limits.Steps.Max} (got {request.Steps}).");
            if (request.Guidance < Limits.Guidance.Min || request.Guidance > Limits.Guidance.Max)
                throw new StylizationRequestException("validation-error", $"guidance must be between {Limits.Guidance.Min} and {Limits.Guidance.Max} (got {request.Guidance}).");
        }

        private static void CheckSide(string name, int? value, int max)
        {
            if (value is { } v && (v < SubmissionLimits.SizeMultiple || v > max || v % SubmissionLimits.SizeMultiple != 0))
                throw new StylizationRequestException("invalid-size", $"{name} must be a multiple of {SubmissionLimits.SizeMultiple} between {SubmissionLimits.SizeMultiple} and {max} (got {v}).");
        }
    }
}
