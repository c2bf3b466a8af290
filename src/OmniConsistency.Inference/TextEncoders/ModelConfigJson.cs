using System.Text.Json;

namespace OmniConsistency.Inference.TextEncoders;

/// <summary>A transformers <c>config.json</c> is missing, malformed, or describes a model we cannot build.</summary>
public sealed class ModelConfigException(string path, string problem, Exception? inner = null)
    : Exception($"Invalid model config '{path}': {problem}", inner)
{
    public string ConfigPath { get; } = path;
}

/// <summary>Typed reads of a transformers config.json: missing keys take the library default, wrong types are errors.</summary>
internal sealed class ModelConfigJson
{
    private readonly JsonElement _root;

    private ModelConfigJson(string path, JsonElement root)
    {
        Path = path;
        _root = root;
    }

    public string Path { get; }

    /// <summary>Reads a config file; <paramref name="section"/> picks a nested config (e.g. CLIPConfig's text_config) when present.</summary>
    public static ModelConfigJson Read(string path, string? section = null)
    {
        if (!File.Exists(path)) throw new ModelConfigException(path, "file not found");
        JsonElement root;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            root = doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new ModelConfigException(path, $"not valid JSON ({e.Message})", e);
        }
        if (root.ValueKind != JsonValueKind.Object) throw new ModelConfigException(path, "not a JSON object");
        if (section is not null && root.TryGetProperty(section, out var nested) && nested.ValueKind == JsonValueKind.Object)
            root = nested;
        return new ModelConfigJson(path, root);
    }

    public bool Has(string key) => _root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

    public int Int(string key, int fallback, int min = 1)
    {
        if (!Has(key)) return fallback;
        var v = _root.GetProperty(key);
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out var i)) throw new ModelConfigException(Path, $"'{key}' is not an integer");
        if (i < min) throw new ModelConfigException(Path, $"'{key}' = {i} is below {min}");
        return i;
    }

    public long? OptionalLong(string key)
    {
        if (!Has(key)) return null;
        var v = _root.GetProperty(key);
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var l)) return l;
        if (v.ValueKind == JsonValueKind.Array) return null; // a list of eos ids: transformers then uses no single id
        throw new ModelConfigException(Path, $"'{key}' is not an integer");
    }

    public double Double(string key, double fallback)
    {
        if (!Has(key)) return fallback;
        var v = _root.GetProperty(key);
        if (v.ValueKind != JsonValueKind.Number) throw new ModelConfigException(Path, $"'{key}' is not a number");
        var d = v.GetDouble();
        if (!(d > 0) || double.IsInfinity(d)) throw new ModelConfigException(Path, $"'{key}' = {d} must be positive");
        return d;
    }

    public string String(string key, string fallback)
    {
        if (!Has(key)) return fallback;
        var v = _root.GetProperty(key);
        if (v.ValueKind != JsonValueKind.String) throw new ModelConfigException(Path, $"'{key}' is not a string");
        return v.GetString()!;
    }

    public bool? OptionalBool(string key)
    {
        if (!Has(key)) return null;
        var v = _root.GetProperty(key);
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new ModelConfigException(Path, $"'{key}' is not a boolean"),
        };
    }
}
