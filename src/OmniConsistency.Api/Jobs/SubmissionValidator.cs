using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Extensions.Options;
using OmniConsistency.Api.Endpoints;
using OmniConsistency.Api.Engine;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Storage;
using OmniConsistency.Api.Webhooks;
using OmniConsistency.Inference.Pipelines;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.PixelFormats;

namespace OmniConsistency.Api.Jobs;

/// <summary>A submission that passed every check: ready to store and run.</summary>
public sealed record ValidatedSubmission(StylizationSettings Parameters, byte[] Image, string? WebhookUrl, IReadOnlyList<string> WebhookEvents, string RequestHash);

/// <summary>
/// Checks a submission before anything is stored: field ranges, the image (format, byte size, pixel count before
/// decoding — decompression bombs are refused from the header alone — then a full decode so a corrupt file is a
/// 400 now rather than a failed job later), styles against the catalog, the webhook destination, then the
/// engine's own Validate. Every limit comes from <see cref="ISubmissionCatalog.Limits"/> (what GET /v1/info reports);
/// the byte size was checked against Omni:Limits while reading, and again here where the engine's is smaller.
/// </summary>
public sealed class SubmissionValidator(IOptions<LimitsOptions> limitsOptions, DestinationPolicy destinations)
{
    private readonly SemaphoreSlim _decodeSlots = new(limitsOptions.Value.MaxConcurrentImageChecks);

    public async Task<ValidatedSubmission> ValidateAsync(RawSubmission raw, ISubmissionCatalog engine, CancellationToken ct)
    {
        var limits = engine.Limits;
        var steps = raw.Steps ?? limits.Steps.Default;
        var guidance = raw.Guidance ?? limits.Guidance.Default;
        var condSize = raw.CondSize ?? limits.CondSize.Default;
        var maxSide = limits.Size.MaxSide;

        if (raw.Image is null && !raw.Errors.ContainsKey("image")) raw.AddError("image", "An image is required (file part 'image' or base64 'image').");
        if (steps < limits.Steps.Min || steps > limits.Steps.Max) raw.AddError("steps", $"Must be between {limits.Steps.Min} and {limits.Steps.Max} (got {steps}).");
        if (!double.IsFinite(guidance) || guidance < limits.Guidance.Min || guidance > limits.Guidance.Max)
            raw.AddError("guidance", $"Must be between {limits.Guidance.Min} and {limits.Guidance.Max} (got {guidance}).");
        if (raw.Seed is < 0) raw.AddError("seed", "Must not be negative.");
        CheckSide(raw, "width", raw.Width, limits.Size.MinSide, maxSide, limits.Size.Multiple);
        CheckSide(raw, "height", raw.Height, limits.Size.MinSide, maxSide, limits.Size.Multiple);
        CheckSide(raw, "condSize", condSize, limits.CondSize.Min, limits.CondSize.Max, limits.CondSize.Multiple);
        if (raw.Prompt is { Length: var pl } && pl > limits.Prompt.MaxLength) raw.AddError("prompt", $"At most {limits.Prompt.MaxLength} characters (got {pl}).");
        var fit = ParseEnum(raw, "conditionFit", raw.ConditionFit, ConditionFit.Stretch);
        var format = ParseEnum(raw, "outputFormat", raw.OutputFormat?.ToLowerInvariant() == "jpg" ? "jpeg" : raw.OutputFormat, ImageOutputFormat.Png);
        var styleLimits = limits.Styles;
        if (raw.Styles.Count > styleLimits.MaxCount) raw.AddError("style", $"At most {styleLimits.MaxCount} styles (got {raw.Styles.Count}).");
        foreach (var (name, weight) in raw.Styles)
            if (weight is { } w && (!double.IsFinite(w) || w < styleLimits.MinWeight || w > styleLimits.MaxWeight))
                raw.AddError("style", $"Weight of '{name}' must be between {styleLimits.MinWeight} and {styleLimits.MaxWeight} (got {w}).");
        if (raw.Styles.GroupBy(s => s.Name, StringComparer.OrdinalIgnoreCase).FirstOrDefault(g => g.Count() > 1) is { } dup)
            raw.AddError("style", $"Style '{dup.Key}' is given more than once.");
        var events = NormalizeEvents(raw);
        if (raw.WebhookUrl is null && raw.WebhookEvents is { Count: > 0 }) raw.AddError("webhookEvents", "Only meaningful with a webhookUrl.");

        if (raw.Errors.Count > 0) throw ValidationFailed(raw);

        var image = raw.Image!;
        await _decodeSlots.WaitAsync(ct);
        (int imageWidth, int imageHeight) size;
        try { size = CheckImage(image, limits.Image); }
        finally { _decodeSlots.Release(); }
        var (imageWidth, imageHeight) = size;

        // One side given: the other follows the photo's aspect ratio, on the 16-pixel grid.
        int? width = raw.Width, height = raw.Height;
        var grid = limits.Size.Multiple;
        if (width is { } ow && height is null) height = Math.Clamp(RoundTo(ow * (double)imageHeight / imageWidth, grid), limits.Size.MinSide, maxSide);
        if (height is { } oh && width is null) width = Math.Clamp(RoundTo(oh * (double)imageWidth / imageHeight, grid), limits.Size.MinSide, maxSide);

        var styles = new List<StyleSelection>();
        var unknown = new List<string>();
        foreach (var (name, weight) in raw.Styles)
        {
            var style = engine.Styles.FirstOrDefault(s => string.Equals(s.Name, name, StringComparison.OrdinalIgnoreCase));
            if (style is null) unknown.Add(name);
            else styles.Add(new StyleSelection(style.Name, weight ?? style.DefaultScale));
        }
        if (unknown.Count > 0)
            throw new ApiProblemException(400, "unknown-style", "Unknown style",
                $"Not in the catalog: {string.Join(", ", unknown)}. Available: {string.Join(", ", engine.Styles.Select(s => s.Name))}.",
                new Dictionary<string, string[]> { ["style"] = unknown.Select(u => $"Unknown style '{u}'.").ToArray() });

        if (raw.WebhookUrl is { } url && await destinations.CheckUrlAsync(url, ct) is { } why)
            throw new ApiProblemException(400, "webhook-url-not-allowed", "Webhook URL not allowed", $"The webhook URL {why}.",
                new Dictionary<string, string[]> { ["webhookUrl"] = [$"The webhook URL {why}."] });

        var parameters = new StylizationSettings
        {
            Styles = styles, Prompt = string.IsNullOrWhiteSpace(raw.Prompt) ? null : raw.Prompt, Width = width, Height = height,
            Steps = steps, Guidance = guidance, Seed = raw.Seed ?? -1, CondSize = condSize, ConditionFit = fit, OutputFormat = format,
        };
        // The hash identifies the request as sent (a missing seed stays missing), for Idempotency-Key comparisons.
        var hash = RequestHash(parameters, image, raw.WebhookUrl, events);
        if (raw.Seed is null) parameters = parameters with { Seed = RandomNumberGenerator.GetInt32(int.MaxValue) };

        try
        {
            engine.Validate(new StylizationRequest(parameters, image));
        }
        catch (StylizationRequestException ex)
        {
            var slug = ProblemTypes.Descriptions.ContainsKey(ex.ErrorType) ? ex.ErrorType : "validation-error";
            throw new ApiProblemException(400, slug, "The request cannot be run", ex.Message);
        }
        return new ValidatedSubmission(parameters, image, raw.WebhookUrl, raw.WebhookUrl is null ? [] : events, hash);
    }

    private static int RoundTo(double v, int grid) => (int)Math.Round(v / grid) * grid;

    private static void CheckSide(RawSubmission raw, string field, int? value, int min, int max, int multiple)
    {
        if (value is not { } v) return;
        if (v < min || v > max) raw.AddError(field, $"Must be between {min} and {max} (got {v}).");
        else if (v % multiple != 0) raw.AddError(field, $"Must be a multiple of {multiple} (got {v}).");
    }

    private static T ParseEnum<T>(RawSubmission raw, string field, string? value, T fallback) where T : struct, Enum
    {
        if (value is null) return fallback;
        if (Enum.TryParse<T>(value, ignoreCase: true, out var parsed) && Enum.IsDefined(parsed) && !char.IsDigit(value[0])) return parsed;
        raw.AddError(field, $"'{value}' is not one of {string.Join(", ", Enum.GetNames<T>().Select(n => n.ToLowerInvariant()))}.");
        return fallback;
    }

    private static List<string> NormalizeEvents(RawSubmission raw)
    {
        if (raw.WebhookEvents is not { Count: > 0 } given) return [.. JobTransitionEffectsFactory.WebhookEventNames];
        var result = new List<string>();
        foreach (var e in given)
        {
            var name = e.StartsWith("stylization.", StringComparison.OrdinalIgnoreCase) ? e["stylization.".Length..] : e;
            name = name.ToLowerInvariant();
            if (!JobTransitionEffectsFactory.WebhookEventNames.Contains(name))
                raw.AddError("webhookEvents", $"'{e}' is not one of {string.Join(", ", JobTransitionEffectsFactory.WebhookEventNames)}.");
            else if (!result.Contains(name)) result.Add(name);
        }
        return result;
    }

    private static (int Width, int Height) CheckImage(byte[] image, PhotoLimits limits)
    {
        // Omni:Limits:MaxImageBytes was enforced while reading; the engine's may be smaller.
        if (image.LongLength > limits.MaxBytes)
            throw new ApiProblemException(413, "image-too-large", "Image too large", $"The image has {image.LongLength} bytes; the limit is {limits.MaxBytes}.");
        IImageInfo? info;
        IImageFormat? format;
        try
        {
            info = Image.Identify(image, out format);
        }
        catch (Exception ex) when (ex is ImageFormatException or InvalidDataException or NotSupportedException or ArgumentException)
        {
            throw InvalidImage($"The image header is corrupt: {ex.Message}");
        }
        if (info is null || format is null || !limits.Formats.Contains(format.Name, StringComparer.OrdinalIgnoreCase))
            throw InvalidImage(format is null ? "The data is not a PNG, JPEG or WebP image." : $"{format.Name} images are not accepted; send PNG, JPEG or WebP.");
        if (info.Width <= 0 || info.Height <= 0) throw InvalidImage("The image has no pixels.");
        var pixels = (long)info.Width * info.Height;
        if (info.Width > limits.MaxSide || info.Height > limits.MaxSide || pixels > limits.MaxPixels)
            throw new ApiProblemException(413, "image-too-large", "Image too large",
                $"The image is {info.Width}x{info.Height} ({pixels} pixels); the limits are {limits.MaxSide} pixels a side and {limits.MaxPixels} pixels.");
        try
        {
            // Within the pixel limit, so the decode's memory is bounded.
            using var decoded = Image.Load<Rgb24>(image);
        }
        catch (Exception ex) when (ex is ImageFormatException or InvalidDataException or NotSupportedException or ArgumentException or IndexOutOfRangeException)
        {
            throw InvalidImage($"The image data is corrupt: {ex.Message}");
        }
        return (info.Width, info.Height);
    }

    private static ApiProblemException InvalidImage(string detail) =>
        new(400, "invalid-image", "Invalid image", detail, new Dictionary<string, string[]> { ["image"] = [detail] });

    private static ApiProblemException ValidationFailed(RawSubmission raw) =>
        new(400, "validation-error", "Invalid request",
            "One or more fields are invalid: " + string.Join("; ", raw.Errors.Select(e => $"{e.Key}: {string.Join(" ", e.Value)}")),
            raw.Errors.ToDictionary(e => e.Key, e => e.Value.ToArray()));

    private static string RequestHash(StylizationSettings p, byte[] image, string? webhookUrl, IReadOnlyList<string> events)
    {
        var canonical = JsonSerializer.Serialize(new
        {
            image = Convert.ToHexStringLower(SHA256.HashData(image)),
            styles = p.Styles.Select(s => new { s.Name, s.Weight }),
            p.Prompt, p.Width, p.Height, p.Steps, p.Guidance, p.Seed, p.CondSize, p.ConditionFit, p.OutputFormat,
            webhookUrl, events,
        }, ApiJson.Options);
        return Convert.ToHexStringLower(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(canonical)));
    }
}
