using System.Diagnostics.CodeAnalysis;
namespace OmniConsistency.Inference.Pipelines;

// The one narrow interface between the service and the engine: a request in, progress events and an image out.
// No tensors cross it.

public sealed record StyleSelection(string Name, double Weight = 1.0);

public enum ConditionFit
{
    /// <summary>Squash the photo to cond_size × cond_size, as the reference does.</summary>
    Stretch,
    /// <summary>Letterbox the photo into the square, keeping its aspect ratio.</summary>
    Pad,
}

public enum ImageOutputFormat { Png, Jpeg, Webp }

/// <summary>What to generate, apart from the photo (the service stores it as a job's parameters).</summary>
public record StylizationSettings
{
    /// <summary>Style LoRAs by catalog name with weights; empty = base model only.</summary>
    public IReadOnlyList<StyleSelection> Styles { get; init; } = [];
    /// <summary>The user's prompt; the styles' trigger words are added by the engine.</summary>
    public string? Prompt { get; init; }
    /// <summary>Output size in pixels (multiples of 16); null = the photo's aspect ratio at about one megapixel.</summary>
    public int? Width { get; init; }
    public int? Height { get; init; }
    public int Steps { get; init; } = 25;
    public double Guidance { get; init; } = 3.5;
    public long Seed { get; init; }
    public int CondSize { get; init; } = 512;
    public ConditionFit ConditionFit { get; init; } = ConditionFit.Stretch;
    public ImageOutputFormat OutputFormat { get; init; } = ImageOutputFormat.Png;
}

public sealed record StylizationRequest : StylizationSettings
{
    public StylizationRequest()
    {
    }

    /// <summary>The <paramref name="settings"/> applied to <paramref name="image"/>.</summary>
    [SetsRequiredMembers]
    public StylizationRequest(StylizationSettings settings, byte[] image) : base(settings) => Image = image;

    /// <summary>The encoded photo (PNG, JPEG or WebP).</summary>
    public required byte[] Image { get; init; }
}

public sealed record StylizationProgress(string Phase, int Step, int TotalSteps);

public sealed record StylizationResult(
    byte[] Image,
    string ContentType,
    int Width,
    int Height,
    long Seed,
    string EffectivePrompt,
    IReadOnlyList<string> Warnings,
    TimeSpan InferenceTime);

/// <param name="PreviewPath">The style's preview image (a PNG/JPEG/WebP file directly in the style folder), null when it has
/// none. Read it with <c>Lora.StylePreviewFile.Read</c>, which checks it again (the folder may have changed since).</param>
public sealed record StyleInfo(string Name, string DisplayName, IReadOnlyList<string> TriggerWords, double DefaultScale, string? Description,
    string? PreviewPath = null);

public sealed record EngineInfo(string ModelName, bool BuiltIn, string Device, string DType, int MaxSide, int MaxCondSize);

public interface IStylizationEngine
{
    EngineInfo Info { get; }

    /// <summary>The style catalog (configured LoRA folder).</summary>
    IReadOnlyList<StyleInfo> Styles { get; }

    /// <summary>Checks a request without running it; throws <see cref="StylizationRequestException"/> (or a subclass) when it can't run.</summary>
    void Validate(StylizationRequest request);

    /// <summary>Runs one stylization. Progress is reported per denoising step; cancellation is honoured between steps.</summary>
    Task<StylizationResult> RunAsync(StylizationRequest request, IProgress<StylizationProgress>? progress, CancellationToken cancellationToken);
}

/// <summary>A request the engine cannot run as given (bad size, unknown style, bad image, ...). Maps to a 4xx.</summary>
public class StylizationRequestException(string errorType, string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>A stable machine-readable kind, e.g. "invalid-image", "unknown-style", "invalid-size".</summary>
    public string ErrorType { get; } = errorType;
}
