using OmniConsistency.Inference.Imaging;
using OmniConsistency.Inference.Lora;

namespace OmniConsistency.Inference.Pipelines;

/// <summary>One resolved style of a request: its catalog entry and adapter weight.</summary>
public sealed record PlannedStyle(StyleEntry Style, double Weight);

/// <summary>
/// A request checked against the engine's limits, with everything resolved that does not need the decoded photo.
/// <see cref="Width"/>/<see cref="Height"/> are null when the request leaves them to the photo's aspect ratio (resolved
/// after decoding, when EXIF orientation is known).
/// </summary>
public sealed record StylizationPlan(
    int SourceWidth, int SourceHeight, int? Width, int? Height, int Steps, double Guidance, long Seed, int CondSize,
    ConditionFit ConditionFit, ImageOutputFormat OutputFormat, IReadOnlyList<PlannedStyle> Styles, string EffectivePrompt);

/// <summary>
/// Validates requests cheaply (no decoding beyond the image header, no tensors) and resolves sizes and prompts. Every
/// problem is a <see cref="StylizationRequestException"/> with a stable <see cref="StylizationRequestException.ErrorType"/>:
/// invalid-image, image-too-large, invalid-size, invalid-steps, invalid-guidance, invalid-cond-size, invalid-style-name,
/// unknown-style, invalid-style-weight, too-many-styles, invalid-prompt, invalid-option.
/// </summary>
public sealed class StylizationPlanner(StylizationEngineOptions options, ImageCodec codec, StyleCatalog? catalog)
{
    public StylizationPlan Plan(StylizationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (!Enum.IsDefined(request.ConditionFit))
            throw new StylizationRequestException("invalid-option", $"Unknown condition fit {(int)request.ConditionFit}; use stretch or pad.");
        if (!Enum.IsDefined(request.OutputFormat))
            throw new StylizationRequestException("invalid-option", $"Unknown output format {(int)request.OutputFormat}; use png, jpeg or webp.");
        if (request.Steps < 1 || request.Steps > options.MaxSteps)
            throw new StylizationRequestException("invalid-steps", $"Steps must be between 1 and {options.MaxSteps}; got {request.Steps}.");
        if (!double.IsFinite(request.Guidance) || request.Guidance < options.MinGuidance || request.Guidance > options.MaxGuidance)
            throw new StylizationRequestException("invalid-guidance", $"Guidance must be between {options.MinGuidance} and {options.MaxGuidance}; got {request.Guidance}.");
        if (request.CondSize < 16 || request.CondSize % 16 != 0 || request.CondSize > options.MaxCondSize)
            throw new StylizationRequestException("invalid-cond-size", $"cond_size must be a multiple of 16 between 16 and {options.MaxCondSize}; got {request.CondSize}.");
        CheckSide("width", request.Width);
        CheckSide("height", request.Height);
        if (request.Width is int w && request.Height is int h && (long)w * h > options.MaxPixels)
            throw new StylizationRequestException("invalid-size", $"The output {w}×{h} has {(long)w * h} pixels; at most {options.MaxPixels} are allowed.");
        var prompt = request.Prompt ?? "";
        if (prompt.Length > options.MaxPromptLength)
            throw new StylizationRequestException("invalid-prompt", $"The prompt has {prompt.Length} characters; at most {options.MaxPromptLength} are allowed.");
        var styles = ResolveStyles(request.Styles ?? []);

        var (sourceWidth, sourceHeight) = codec.Identify(request.Image);
        var limits = codec.Limits;
        if (sourceWidth > limits.MaxSide || sourceHeight > limits.MaxSide || (long)sourceWidth * sourceHeight > limits.MaxPixels)
            throw new ImageTooLargeException($"The image is {sourceWidth}×{sourceHeight} pixels; each side may be at most {limits.MaxSide} and the area at most {limits.MaxPixels}.");

        return new StylizationPlan(sourceWidth, sourceHeight, request.Width, request.Height, request.Steps, request.Guidance, request.Seed,
            request.CondSize, request.ConditionFit, request.OutputFormat, styles, EffectivePrompt(prompt, styles));
    }

    /// <summary>
    /// The output size for a photo of <paramref name="photoWidth"/>×<paramref name="photoHeight"/> (after EXIF orientation):
    /// the request's size; one side given = the other from the photo's aspect; none = the aspect at about DefaultPixels.
    /// </summary>
    public (int Width, int Height) OutputSizeFor(StylizationPlan plan, int photoWidth, int photoHeight)
    {
        if (plan.Width is int w && plan.Height is int h) return (w, h);
        double aspect = (double)photoWidth / photoHeight;
        int cap = options.MaxSide - options.MaxSide % 16;
        static int Snap(double side, int cap) => Math.Clamp((int)Math.Round(side / 16, MidpointRounding.AwayFromZero) * 16, 16, cap);
        (int Width, int Height) size = plan.Width is int givenW ? (givenW, Snap(givenW / aspect, cap))
            : plan.Height is int givenH ? (Snap(givenH * aspect, cap), givenH)
            : OutputSize.ForAspect(photoWidth, photoHeight, Math.Min(options.DefaultPixels, options.MaxPixels), options.MaxSide);
        // Rounding can overshoot the pixel cap by a little: shrink the derived side(s) until it fits.
        while ((long)size.Width * size.Height > options.MaxPixels)
        {
            if (plan.Width is null && size.Width > 16 && (plan.Height is not null || size.Width >= size.Height)) size.Width -= 16;
            else if (plan.Height is null && size.Height > 16) size.Height -= 16;
            else throw new StylizationRequestException("invalid-size", $"No output size within {options.MaxPixels} pixels fits the request.");
        }
        return size;
    }

    /// <summary>The styles' trigger words (those not already in the prompt) before the user's prompt, comma-separated.</summary>
    public static string EffectivePrompt(string prompt, IReadOnlyList<PlannedStyle> styles)
    {
        var parts = new List<string>();
        foreach (var word in styles.Where(s => s.Weight != 0).SelectMany(s => s.Style.TriggerWords))
            if (!prompt.Contains(word, StringComparison.OrdinalIgnoreCase) && !parts.Contains(word, StringComparer.OrdinalIgnoreCase))
                parts.Add(word);
        if (!string.IsNullOrWhiteSpace(prompt)) parts.Add(prompt.Trim());
        return string.Join(", ", parts);
    }

    private void CheckSide(string name, int? value)
    {
        if (value is not int v) return;
        if (v < 16 || v % 16 != 0 || v > options.MaxSide)
            throw new StylizationRequestException("invalid-size", $"The output {name} must be a multiple of 16 between 16 and {options.MaxSide - options.MaxSide % 16}; got {v}.");
    }

    private List<PlannedStyle> ResolveStyles(IReadOnlyList<StyleSelection> selections)
    {
        if (selections.Count > options.MaxStyles)
            throw new StylizationRequestException("too-many-styles", $"At most {options.MaxStyles} styles may be combined; got {selections.Count}.");
        var resolved = new List<PlannedStyle>();
        foreach (var s in selections)
        {
            if (s is null) throw new StylizationRequestException("invalid-style-name", "A style entry is empty.");
            if (!double.IsFinite(s.Weight) || Math.Abs(s.Weight) > StyleCatalog.MaxAbsScale)
                throw new StylizationRequestException("invalid-style-weight", $"The weight of style '{s.Name}' must be a number between -{StyleCatalog.MaxAbsScale} and {StyleCatalog.MaxAbsScale}; got {s.Weight}.");
            if (catalog is null)
            {
                if (!StyleCatalog.IsValidName(s.Name))
                    throw new StylizationRequestException("invalid-style-name", $"'{s.Name}' is not a valid style name.");
                throw new StylizationRequestException("unknown-style", $"There is no style named '{s.Name}' (no style folder is configured).");
            }
            resolved.Add(new PlannedStyle(catalog.Resolve(s.Name), s.Weight));
        }
        return resolved;
    }
}
