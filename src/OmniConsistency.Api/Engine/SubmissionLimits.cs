using OmniConsistency.Api.Options;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Engine;

/// <summary>Output size: each side a multiple of <paramref name="Multiple"/> in MinSide..MaxSide, width × height ≤ MaxPixels.
/// Without a size the photo's aspect ratio at about <paramref name="DefaultPixels"/> is used.</summary>
public sealed record SizeLimits(int Multiple, int MinSide, int MaxSide, long MaxPixels, long DefaultPixels);

/// <summary>The square condition image's side: a multiple of <paramref name="Multiple"/> in Min..Max.</summary>
public sealed record CondSizeLimits(int Multiple, int Min, int Max, int Default);

public sealed record StepLimits(int Min, int Max, int Default);

public sealed record GuidanceLimits(double Min, double Max, double Default);

/// <summary>At most <paramref name="MaxCount"/> styles, each weight in MinWeight..MaxWeight (default: the style's default scale).</summary>
public sealed record StyleLimits(int MaxCount, double MinWeight, double MaxWeight);

public sealed record PromptLimits(int MaxLength);

/// <summary>The uploaded photo: encoded bytes, width/height and pixel count, and the accepted formats.</summary>
public sealed record PhotoLimits(long MaxBytes, int MaxSide, long MaxPixels, IReadOnlyList<string> Formats);

/// <summary>
/// What a submission must satisfy in this process: the service's limits (Omni:Limits) and the engine's together, the
/// stricter of each. <see cref="Jobs.SubmissionValidator"/> enforces exactly these (a value inside passes the
/// validator and the engine's own checks, one beyond is a 400), and GET /v1/info reports them.
/// </summary>
public sealed record SubmissionLimits(
    SizeLimits Size,
    CondSizeLimits CondSize,
    StepLimits Steps,
    GuidanceLimits Guidance,
    StyleLimits Styles,
    PromptLimits Prompt,
    PhotoLimits Image,
    IReadOnlyList<string> OutputFormats,
    IReadOnlyList<string> ConditionFits,
    long MaxRequestBytes)
{
    /// <summary>The latent grid: VAE downsampling 8 × 2×2 patches.</summary>
    public const int SizeMultiple = 16;
    public const int MinSteps = 1;
    /// <summary>The API's own cap on a style weight (the engine's is <see cref="StyleCatalog.MaxAbsScale"/>): beyond it results are noise.</summary>
    public const double StyleWeightCap = 4;
    /// <summary>Formats the photo may have (ImageSharp format names, case-insensitive).</summary>
    public static readonly IReadOnlyList<string> InputFormats = ["png", "jpeg", "webp"];
    /// <summary>The request contract's defaults (guidance has no engine option).</summary>
    private static readonly StylizationRequest RequestDefaults = new() { Image = [] };

    /// <param name="engine">The engine's limits: the loaded engine's own options, or the same Omni:Engine keys (<see cref="EngineCatalogOptions.ToEngineOptions"/>).</param>
    /// <param name="info">The loaded engine's report (its MaxSide/MaxCondSize bind too); null when none is loaded.</param>
    /// <param name="service">Omni:Limits: upload sizes, prompt length and style count the API refuses before the engine sees them.</param>
    public static SubmissionLimits Combine(StylizationEngineOptions engine, EngineInfo? info, LimitsOptions service)
    {
        var maxSide = FloorToGrid(Math.Min(engine.MaxSide, info?.MaxSide ?? int.MaxValue));
        var maxCond = FloorToGrid(Math.Min(engine.MaxCondSize, info?.MaxCondSize ?? int.MaxValue));
        var maxSteps = engine.MaxSteps;
        var weight = Math.Min(StyleWeightCap, StyleCatalog.MaxAbsScale);
        return new SubmissionLimits(
            new SizeLimits(SizeMultiple, SizeMultiple, maxSide, engine.MaxPixels, Math.Min(engine.DefaultPixels, engine.MaxPixels)),
            new CondSizeLimits(SizeMultiple, SizeMultiple, maxCond, Math.Clamp(FloorToGrid(engine.DefaultCondSize), SizeMultiple, maxCond)),
            new StepLimits(MinSteps, maxSteps, Math.Clamp(engine.DefaultSteps, MinSteps, maxSteps)),
            new GuidanceLimits(engine.MinGuidance, engine.MaxGuidance, RequestDefaults.Guidance),
            new StyleLimits(Math.Min(service.MaxStyles, engine.MaxStyles), -weight, weight),
            new PromptLimits(Math.Min(service.MaxPromptLength, engine.MaxPromptLength)),
            new PhotoLimits(Math.Min(service.MaxImageBytes, engine.MaxImageBytes), Math.Min(service.MaxImageSide, engine.MaxImageSide),
                Math.Min(service.MaxImagePixels, engine.MaxImagePixels), InputFormats),
            Enum.GetNames<ImageOutputFormat>().Select(n => n.ToLowerInvariant()).ToList(),
            Enum.GetNames<ConditionFit>().Select(n => n.ToLowerInvariant()).ToList(),
            service.MaxRequestBytes);
    }

    private static int FloorToGrid(int v) => v - v % SizeMultiple;
}
