using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.Features;
using OmniConsistency.Api.Endpoints;
using OmniConsistency.Api.Options;

namespace OmniConsistency.Api.Jobs;

/// <summary>The JSON form of a submission (the image as base64 or a data: URL). Unknown fields are refused.</summary>
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
public sealed class StylizationJsonRequest
{
    /// <summary>The photo, base64 (optionally as a data: URL). PNG, JPEG or WebP.</summary>
    public string? Image { get; set; }
    public List<StyleJsonEntry>? Styles { get; set; }
    public string? Prompt { get; set; }
    public int? Width { get; set; }
    public int? Height { get; set; }
    public int? Steps { get; set; }
    public double? Guidance { get; set; }
    public long? Seed { get; set; }
    public int? CondSize { get; set; }
    /// <summary>stretch | pad</summary>
    public string? ConditionFit { get; set; }
    /// <summary>png | jpeg | webp</summary>
    public string? OutputFormat { get; set; }
    public string? WebhookUrl { get; set; }
    /// <summary>Any of started, succeeded, failed, canceled (default: all).</summary>
    public List<string>? WebhookEvents { get; set; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
public sealed class StyleJsonEntry
{
    public string? Name { get; set; }
    public double? Weight { get; set; }
}

/// <summary>A submission as read from the wire, before validation; field-level parse errors are collected, not thrown.</summary>
public sealed class RawSubmission
{
    public byte[]? Image { get; set; }
    public List<(string Name, double? Weight)> Styles { get; } = [];
    public string? Prompt { get; set; }
    public int? Width { get; set; }
    public int? Height { get; set; }
    public int? Steps { get; set; }
    public double? Guidance { get; set; }
    public long? Seed { get; set; }
    public int? CondSize { get; set; }
    public string? ConditionFit { get; set; }
    public string? OutputFormat { get; set; }
    public string? WebhookUrl { get; set; }
    public List<string>? WebhookEvents { get; set; }
    public Dictionary<string, List<string>> Errors { get; } = new(StringComparer.Ordinal);

    public void AddError(string field, string message)
    {
        if (!Errors.TryGetValue(field, out var list)) Errors[field] = list = [];
        list.Add(message);
    }
}

/// <summary>Reads POST /v1/stylizations bodies: multipart/form-data or application/json, within the configured limits.</summary>
public static class SubmissionReader
{
    private static readonly JsonSerializerOptions JsonOptions = ApiJson.Configure(new JsonSerializerOptions(JsonSerializerDefaults.Web));

    private static readonly HashSet<string> FormFields = new(StringComparer.Ordinal)
    {
        "image", "style", "prompt", "width", "height", "steps", "guidance", "seed", "condSize", "conditionFit", "outputFormat",
        "webhookUrl", "webhookEvents",
    };

    public static async Task<RawSubmission> ReadAsync(HttpRequest request, LimitsOptions limits, CancellationToken ct)
    {
        if (request.ContentLength is { } length && length > limits.MaxRequestBytes)
            throw RequestTooLarge(limits);
        if (request.ContentLength == 0)
            throw new ApiProblemException(400, "invalid-request-body", "Empty request body",
                "The request has no body: send the image and fields as multipart/form-data or application/json.");

        var contentType = request.ContentType ?? "";
        try
        {
            if (request.HasFormContentType)
            {
                if (!contentType.StartsWith("multipart/form-data", StringComparison.OrdinalIgnoreCase))
                    throw new ApiProblemException(415, "unsupported-media-type", "Unsupported media type",
                        "Forms must be multipart/form-data (the image is a file part).");
                return await ReadFormAsync(request, limits, ct);
            }
            if (contentType.StartsWith("application/json", StringComparison.OrdinalIgnoreCase) ||
                contentType.Contains("+json", StringComparison.OrdinalIgnoreCase))
                return await ReadJsonAsync(request, limits, ct);
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            throw RequestTooLarge(limits);
        }
        catch (InvalidDataException ex) when (ex.Message.Contains("limit", StringComparison.OrdinalIgnoreCase))
        {
            throw RequestTooLarge(limits, ex.Message);
        }
        catch (InvalidDataException ex)
        {
            throw new ApiProblemException(400, "invalid-request-body", "Malformed multipart body", ex.Message);
        }
        catch (IOException ex) when (ex.InnerException is BadHttpRequestException { StatusCode: 413 })
        {
            throw RequestTooLarge(limits);
        }
        throw new ApiProblemException(415, "unsupported-media-type", "Unsupported media type",
            $"Content-Type '{contentType}' is not accepted: use multipart/form-data or application/json.");
    }

    private static ApiProblemException RequestTooLarge(LimitsOptions limits, string? why = null) =>
        new(413, "request-too-large", "Request too large",
            why ?? $"The request body exceeds the limit of {limits.MaxRequestBytes} bytes.");

    private static ApiProblemException ImageTooLarge(long bytes, LimitsOptions limits) =>
        new(413, "image-too-large", "Image too large", $"The image has {bytes} bytes; the limit is {limits.MaxImageBytes}.");

    private static async Task<RawSubmission> ReadFormAsync(HttpRequest request, LimitsOptions limits, CancellationToken ct)
    {
        var form = await request.ReadFormAsync(new FormOptions
        {
            MultipartBodyLengthLimit = limits.MaxRequestBytes,
            ValueCountLimit = 256,
            ValueLengthLimit = Math.Max(4096, limits.MaxPromptLength * 4 + 1024),
            KeyLengthLimit = 256,
        }, ct);
        var raw = new RawSubmission();

        foreach (var key in form.Keys.Concat(form.Files.Select(f => f.Name)).Distinct())
            if (!FormFields.Contains(key)) raw.AddError(key, $"Unknown field '{key}'. Fields: {string.Join(", ", FormFields)}.");

        var files = form.Files.GetFiles("image");
        if (files.Count > 1) raw.AddError("image", "Send exactly one image.");
        if (files.Count >= 1)
        {
            var file = files[0];
            if (file.Length > limits.MaxImageBytes) throw ImageTooLarge(file.Length, limits);
            var bytes = new byte[file.Length];
            await using (var s = file.OpenReadStream()) await s.ReadExactlyAsync(bytes, ct);
            raw.Image = bytes;
        }
        else if (form.ContainsKey("image"))
            raw.AddError("image", "The image must be sent as a file part (multipart filename), not as a text field.");

        foreach (var entry in form["style"])
        {
            if (string.IsNullOrWhiteSpace(entry)) continue;
            foreach (var item in entry.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                var colon = item.LastIndexOf(':');
                if (colon < 0) { raw.Styles.Add((item, null)); continue; }
                if (double.TryParse(item[(colon + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out var w))
                    raw.Styles.Add((item[..colon], w));
                else
                    raw.AddError("style", $"'{item}' is not 'name' or 'name:weight' with a numeric weight.");
            }
        }
        raw.Prompt = Single(form, "prompt", raw);
        raw.Width = Int(form, "width", raw);
        raw.Height = Int(form, "height", raw);
        raw.Steps = Int(form, "steps", raw);
        raw.Guidance = Double(form, "guidance", raw);
        raw.Seed = Long(form, "seed", raw);
        raw.CondSize = Int(form, "condSize", raw);
        raw.ConditionFit = Single(form, "conditionFit", raw);
        raw.OutputFormat = Single(form, "outputFormat", raw);
        raw.WebhookUrl = Single(form, "webhookUrl", raw);
        if (form.TryGetValue("webhookEvents", out var events))
            raw.WebhookEvents = events.SelectMany(e => (e ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList();
        return raw;
    }

    private static string? Single(IFormCollection form, string name, RawSubmission raw)
    {
        if (!form.TryGetValue(name, out var values) || values.Count == 0) return null;
        if (values.Count > 1) raw.AddError(name, "Give this field once.");
        var v = values[0];
        return string.IsNullOrEmpty(v) ? null : v;
    }

    private delegate bool FieldParser<T>(string text, out T value);

    private static T? Parsed<T>(IFormCollection form, string name, RawSubmission raw, FieldParser<T> parse, string what) where T : struct
    {
        var s = Single(form, name, raw);
        if (s is null) return null;
        if (parse(s, out var v)) return v;
        raw.AddError(name, $"'{s}' is not {what}.");
        return null;
    }

    private static int? Int(IFormCollection form, string name, RawSubmission raw) =>
        Parsed(form, name, raw, (string s, out int v) => int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out v), "an integer");

    private static long? Long(IFormCollection form, string name, RawSubmission raw) =>
        Parsed(form, name, raw, (string s, out long v) => long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out v), "an integer");

    private static double? Double(IFormCollection form, string name, RawSubmission raw) =>
        Parsed(form, name, raw, (string s, out double v) => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out v), "a number");

    private static async Task<RawSubmission> ReadJsonAsync(HttpRequest request, LimitsOptions limits, CancellationToken ct)
    {
        StylizationJsonRequest? body;
        try
        {
            body = await JsonSerializer.DeserializeAsync<StylizationJsonRequest>(request.Body, JsonOptions, ct);
        }
        catch (JsonException ex)
        {
            throw new ApiProblemException(400, "invalid-request-body", "Invalid JSON body",
                ex.Path is { Length: > 1 } path ? $"{ex.Message.Split(" Path:")[0]} (at {path})" : ex.Message.Split(" Path:")[0]);
        }
        if (body is null)
            throw new ApiProblemException(400, "invalid-request-body", "Invalid JSON body", "The body must be a JSON object.");

        var raw = new RawSubmission
        {
            Prompt = body.Prompt, Width = body.Width, Height = body.Height, Steps = body.Steps, Guidance = body.Guidance,
            Seed = body.Seed, CondSize = body.CondSize, ConditionFit = body.ConditionFit, OutputFormat = body.OutputFormat,
            WebhookUrl = body.WebhookUrl, WebhookEvents = body.WebhookEvents,
        };
        foreach (var (s, i) in (body.Styles ?? []).Select((s, i) => (s, i)))
        {
            if (string.IsNullOrWhiteSpace(s?.Name)) raw.AddError($"styles[{i}].name", "A style needs a name.");
            else raw.Styles.Add((s.Name.Trim(), s.Weight));
        }
        if (body.Image is { } b64)
        {
            var comma = b64.StartsWith("data:", StringComparison.Ordinal) ? b64.IndexOf(',') : -1;
            var payload = comma >= 0 ? b64.AsSpan(comma + 1) : b64.AsSpan();
            var maxDecoded = (long)payload.Length / 4 * 3;
            if (maxDecoded > limits.MaxImageBytes + 3) throw ImageTooLarge(maxDecoded, limits);
            var buffer = new byte[maxDecoded + 3];
            if (Convert.TryFromBase64Chars(payload, buffer, out var written))
            {
                if (written > limits.MaxImageBytes) throw ImageTooLarge(written, limits);
                raw.Image = buffer.AsSpan(0, written).ToArray();
            }
            else
                raw.AddError("image", "The image is not valid base64.");
        }
        return raw;
    }
}
