using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Inference.Lora;

public sealed record StyleCatalogOptions
{
    /// <summary>The folder holding <c>&lt;name&gt;.safetensors</c> style LoRAs and optional <c>&lt;name&gt;.json</c> sidecars.</summary>
    public required string Folder { get; init; }
    /// <summary>Sidecars larger than this are ignored (reported as a problem).</summary>
    public long MaxSidecarBytes { get; init; } = 64 * 1024;
    /// <summary>
    /// A listing older than this is rescanned on the next use, so LoRAs added to (or removed from) the folder appear
    /// without a restart; null: only <see cref="StyleCatalog.Refresh"/> rescans.
    /// </summary>
    public TimeSpan? RefreshInterval { get; init; }
    /// <summary>The clock for <see cref="RefreshInterval"/> (tests use a fake one).</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;
}

/// <summary>One style of the catalog: its LoRA file (a real path inside the folder) and its sidecar metadata.</summary>
/// <param name="PreviewPath">The sidecar's preview image: the folder's real path + the file name as the sidecar gives it
/// (a link inside the folder stays unresolved, so that <see cref="StylePreviewFile"/> can check it again when serving).</param>
public sealed record StyleEntry(string Name, string LoraPath, string DisplayName, IReadOnlyList<string> TriggerWords,
    double DefaultScale, string? Description, string? PreviewPath)
{
    public StyleInfo ToInfo() => new(Name, DisplayName, TriggerWords, DefaultScale, Description, PreviewPath);
}

/// <summary>
/// The style LoRAs of a configured folder. A style's name is its file name without <c>.safetensors</c>; names are
/// restricted to letters, digits, '.', '_' and '-' (starting with a letter or digit, no "..", at most 128 characters),
/// so a request can never name a path. Files, sidecars and previews reached through symbolic links are accepted only when the
/// link resolves inside the folder. Problems found while scanning (bad names, bad sidecars, links out of the folder)
/// are logged and listed in <see cref="Problems"/>; the affected file is skipped (a bad sidecar only loses its metadata).
/// </summary>
public sealed class StyleCatalog
{
    public const int MaxNameLength = 128;
    public const double MaxAbsScale = 10;
    private const int MaxTriggerWords = 32, MaxTriggerWordLength = 200, MaxDescriptionLength = 2000, MaxDisplayNameLength = 200;
    private static readonly Regex NamePattern = new(@"^[A-Za-z0-9][A-Za-z0-9._-]*$", RegexOptions.CultureInvariant);

    private readonly StyleCatalogOptions _options;
    private readonly ILogger _logger;
    private readonly Lock _scanGate = new();
    private Snapshot _snapshot = null!;
    private long _scannedAt;

    private sealed record Snapshot(IReadOnlyList<StyleEntry> Entries, IReadOnlyDictionary<string, StyleEntry> ByName, IReadOnlyList<string> Problems);

    public StyleCatalog(StyleCatalogOptions options, ILogger? logger = null)
    {
        _options = options;
        _logger = logger ?? NullLogger.Instance;
        if (!Directory.Exists(options.Folder)) throw new DirectoryNotFoundException($"Style folder '{options.Folder}' does not exist.");
        Folder = SafePaths.RealPath(options.Folder);
        Refresh();
    }

    /// <summary>The folder's real path.</summary>
    public string Folder { get; }
    public IReadOnlyList<StyleEntry> Entries => Current.Entries;
    public IReadOnlyList<StyleInfo> Styles => Current.Entries.Select(e => e.ToInfo()).ToList();
    /// <summary>What the last scan skipped or could not read, one line each.</summary>
    public IReadOnlyList<string> Problems => Current.Problems;

    /// <summary>Rescans the folder (the previous listing stays in use until the new one is complete).</summary>
    public void Refresh()
    {
        lock (_scanGate)
        {
            var started = _options.Time.GetTimestamp();
            _snapshot = Scan();
            Volatile.Write(ref _scannedAt, started);
        }
    }

    /// <summary>
    /// The listing, rescanned first when older than <see cref="StyleCatalogOptions.RefreshInterval"/>. One caller scans;
    /// callers arriving meanwhile use the previous listing instead of waiting on the disk.
    /// </summary>
    private Snapshot Current
    {
        get
        {
            if (_options.RefreshInterval is { } interval && _options.Time.GetElapsedTime(Volatile.Read(ref _scannedAt)) >= interval
                && _scanGate.TryEnter())
            {
                try
                {
                    if (_options.Time.GetElapsedTime(Volatile.Read(ref _scannedAt)) >= interval) Refresh();
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // Reads must not fail because a rescan did (folder briefly gone): keep the listing, retry next interval.
                    _logger.LogWarning("Style catalog {Folder}: rescan failed, the previous listing stays in use ({Error})", Folder, e.Message);
                    Volatile.Write(ref _scannedAt, _options.Time.GetTimestamp());
                }
                finally
                {
                    _scanGate.Exit();
                }
            }
            return _snapshot;
        }
    }

    public static bool IsValidName(string? name) =>
        !string.IsNullOrEmpty(name) && name.Length <= MaxNameLength && NamePattern.IsMatch(name) && !name.Contains("..", StringComparison.Ordinal);

    /// <summary>The style called <paramref name="name"/>, re-checked on disk.</summary>
    /// <exception cref="StylizationRequestException">"invalid-style-name" or "unknown-style".</exception>
    public StyleEntry Resolve(string name)
    {
        if (!IsValidName(name))
            throw new StylizationRequestException("invalid-style-name",
                $"'{Truncate(name, 64)}' is not a valid style name (letters, digits, '.', '_', '-'; at most {MaxNameLength} characters).");
        if (!Current.ByName.TryGetValue(name, out var entry))
            throw new StylizationRequestException("unknown-style", $"There is no style named '{name}'.");
        // The folder may have changed since the scan: the file must still be a regular file inside it.
        string real;
        try
        {
            real = SafePaths.RealPath(Path.Combine(Folder, name + ".safetensors"));
        }
        catch (IOException)
        {
            throw new StylizationRequestException("unknown-style", $"Style '{name}' is no longer available.");
        }
        if (!SafePaths.IsInside(real, Folder) || !File.Exists(real))
            throw new StylizationRequestException("unknown-style", $"Style '{name}' is no longer available.");
        return entry with { LoraPath = real };
    }

    public bool TryResolve(string name, out StyleEntry entry)
    {
        try
        {
            entry = Resolve(name);
            return true;
        }
        catch (StylizationRequestException)
        {
            entry = null!;
            return false;
        }
    }

    private Snapshot Scan()
    {
        var entries = new List<StyleEntry>();
        var problems = new List<string>();
        foreach (var path in Directory.EnumerateFiles(Folder, "*.safetensors", SearchOption.TopDirectoryOnly).Order(StringComparer.Ordinal))
        {
            var file = Path.GetFileName(path);
            var name = file[..^".safetensors".Length];
            if (!IsValidName(name))
            {
                problems.Add($"{file}: skipped, '{name}' is not a valid style name");
                continue;
            }
            string real;
            try
            {
                real = SafePaths.RealPath(path);
            }
            catch (IOException e)
            {
                problems.Add($"{file}: skipped, its link can't be resolved ({e.Message})");
                continue;
            }
            if (!SafePaths.IsInside(real, Folder))
            {
                problems.Add($"{file}: skipped, it links outside the style folder");
                continue;
            }
            if (!File.Exists(real))
            {
                problems.Add($"{file}: skipped, not a readable file");
                continue;
            }
            entries.Add(ReadSidecar(name, real, problems));
        }
        foreach (var p in problems) _logger.LogWarning("Style catalog {Folder}: {Problem}", Folder, p);
        return new Snapshot(entries, entries.ToDictionary(e => e.Name, StringComparer.Ordinal), problems);
    }

    private StyleEntry ReadSidecar(string name, string loraPath, List<string> problems)
    {
        var entry = new StyleEntry(name, loraPath, name, [], 1.0, null, null);
        var sidecar = Path.Combine(Folder, name + ".json");
        if (!File.Exists(sidecar)) return entry;
        var real = SafePaths.RealPath(sidecar);
        var label = name + ".json";
        if (!SafePaths.IsInside(real, Folder))
        {
            problems.Add($"{label}: ignored, it links outside the style folder");
            return entry;
        }
        if (new FileInfo(real).Length > _options.MaxSidecarBytes)
        {
            problems.Add($"{label}: ignored, larger than {_options.MaxSidecarBytes} bytes");
            return entry;
        }
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(real), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip, MaxDepth = 8 });
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            problems.Add($"{label}: ignored, not readable JSON ({e.Message})");
            return entry;
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                problems.Add($"{label}: ignored, not a JSON object");
                return entry;
            }
            if (Field(root, "display_name", "displayName") is { } dn)
            {
                if (dn.ValueKind == JsonValueKind.String && dn.GetString()!.Trim() is { Length: > 0 and <= MaxDisplayNameLength } d) entry = entry with { DisplayName = d };
                else problems.Add($"{label}: display_name must be a string of 1-{MaxDisplayNameLength} characters");
            }
            if (Field(root, "trigger_words", "triggerWords") is { } tw)
            {
                var words = tw.ValueKind == JsonValueKind.String ? [tw] : tw.ValueKind == JsonValueKind.Array ? tw.EnumerateArray().ToList() : null;
                if (words is null || words.Count > MaxTriggerWords || words.Any(w => w.ValueKind != JsonValueKind.String || w.GetString()!.Trim() is not { Length: > 0 and <= MaxTriggerWordLength }))
                    problems.Add($"{label}: trigger_words must be a string or a list of at most {MaxTriggerWords} non-empty strings of at most {MaxTriggerWordLength} characters");
                else entry = entry with { TriggerWords = words.Select(w => w.GetString()!.Trim()).ToList() };
            }
            if (Field(root, "default_scale", "defaultScale") is { } ds)
            {
                if (ds.ValueKind == JsonValueKind.Number && ds.GetDouble() is var v && double.IsFinite(v) && Math.Abs(v) <= MaxAbsScale) entry = entry with { DefaultScale = v };
                else problems.Add($"{label}: default_scale must be a number between -{MaxAbsScale} and {MaxAbsScale}");
            }
            if (Field(root, "description") is { } de)
            {
                if (de.ValueKind == JsonValueKind.String && de.GetString()!.Trim() is { Length: <= MaxDescriptionLength } text) entry = entry with { Description = text.Length == 0 ? null : text };
                else problems.Add($"{label}: description must be a string of at most {MaxDescriptionLength} characters");
            }
            if (Field(root, "preview") is { } pv)
            {
                if (pv.ValueKind != JsonValueKind.String || pv.GetString() is not { } file || !IsValidName(file) || !StylePreviewFile.HasPreviewExtension(file))
                    problems.Add($"{label}: preview must name a .png/.jpg/.jpeg/.webp file in the style folder");
                else if (PreviewProblem(Path.Combine(Folder, file)) is { } why) problems.Add($"{label}: preview ignored, {why}");
                else entry = entry with { PreviewPath = Path.Combine(Folder, file) };
            }
        }
        return entry;
    }

    /// <summary>Null when the preview can be served (inside the folder, a PNG/JPEG/WebP by content), else why not.</summary>
    private static string? PreviewProblem(string path)
    {
        try
        {
            StylePreviewFile.Identify(path);
            return null;
        }
        catch (StylePreviewUnavailableException e)
        {
            return e.Message;
        }
    }

    private static JsonElement? Field(JsonElement root, params string[] names)
    {
        foreach (var n in names)
            if (root.TryGetProperty(n, out var v) && v.ValueKind != JsonValueKind.Null) return v;
        return null;
    }

    private static string Truncate(string? s, int max) => s is null ? "" : s.Length <= max ? s : s[..max] + "...";
}
