using System.Text.Json;

namespace OmniConsistency.Inference.Vae;

/// <summary>A VAE config.json that cannot be used (unreadable, unsupported block type, inconsistent sizes).</summary>
public sealed class VaeConfigException(string configSource, string problem) : Exception($"VAE config '{configSource}': {problem}")
{
    public string ConfigSource { get; } = configSource;
}

/// <summary>
/// diffusers' AutoencoderKL config (the <c>vae/config.json</c> of a model folder). Keys missing from the file take
/// diffusers' own defaults, so older or smaller configs load as diffusers would load them.
/// </summary>
public sealed record VaeConfig
{
    public int InChannels { get; init; } = 3;
    public int OutChannels { get; init; } = 3;
    public IReadOnlyList<int> BlockOutChannels { get; init; } = [64];
    public int LayersPerBlock { get; init; } = 1;
    public int LatentChannels { get; init; } = 4;
    public int NormNumGroups { get; init; } = 32;
    public double ScalingFactor { get; init; } = 0.18215;
    /// <summary>FLUX: 0.1159. Older VAEs have none (null in the file), which means no shift.</summary>
    public double ShiftFactor { get; init; }
    public bool UseQuantConv { get; init; } = true;
    public bool UsePostQuantConv { get; init; } = true;
    public bool MidBlockAddAttention { get; init; } = true;

    /// <summary>Pixels per latent cell along each axis: one halving per down block but the last (8 for FLUX).</summary>
    public int SpatialScale => 1 << (BlockOutChannels.Count - 1);

    /// <summary>FLUX.1's VAE (black-forest-labs/FLUX.1-dev vae/config.json).</summary>
    public static VaeConfig Flux1 { get; } = new()
    {
        BlockOutChannels = [128, 256, 512, 512],
        LayersPerBlock = 2,
        LatentChannels = 16,
        NormNumGroups = 32,
        ScalingFactor = 0.3611,
        ShiftFactor = 0.1159,
        UseQuantConv = false,
        UsePostQuantConv = false,
    };

    public static VaeConfig Load(string path)
    {
        if (!File.Exists(path)) throw new VaeConfigException(path, "file not found");
        try
        {
            return Parse(File.ReadAllText(path), path);
        }
        catch (JsonException e)
        {
            throw new VaeConfigException(path, $"not valid JSON ({e.Message})");
        }
    }

    public static VaeConfig Parse(string json, string source = "<json>")
    {
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new VaeConfigException(source, "the top level is not an object");
        var defaults = new VaeConfig();

        int Int(string key, int fallback) => root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null
            ? v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i : throw new VaeConfigException(source, $"'{key}' is not an integer")
            : fallback;
        double Double(string key, double fallback) => root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null
            ? v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw new VaeConfigException(source, $"'{key}' is not a number")
            : fallback;
        bool Bool(string key, bool fallback) => root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null
            ? v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : throw new VaeConfigException(source, $"'{key}' is not a boolean")
            : fallback;
        List<string>? Strings(string key) => root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Array
            ? v.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : throw new VaeConfigException(source, $"'{key}' holds a non-string")).ToList()
            : null;

        var channels = defaults.BlockOutChannels;
        if (root.TryGetProperty("block_out_channels", out var boc))
        {
            if (boc.ValueKind != JsonValueKind.Array) throw new VaeConfigException(source, "'block_out_channels' is not a list");
            channels = boc.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out var c) ? c
                : throw new VaeConfigException(source, "'block_out_channels' holds a non-integer")).ToList();
        }

        var act = root.TryGetProperty("act_fn", out var a) && a.ValueKind == JsonValueKind.String ? a.GetString() : "silu";
        if (act != "silu") throw new VaeConfigException(source, $"act_fn '{act}' is not supported (only 'silu')");
        // Only the plain encoder/decoder blocks exist in AutoencoderKL configs of this family; others would build
        // different modules, so refuse them rather than load weights into the wrong graph.
        CheckBlockTypes(Strings("down_block_types"), "DownEncoderBlock2D", "down_block_types", channels.Count, source);
        CheckBlockTypes(Strings("up_block_types"), "UpDecoderBlock2D", "up_block_types", channels.Count, source);
        if (root.TryGetProperty("norm_type", out var nt) && nt.ValueKind == JsonValueKind.String && nt.GetString() != "group")
            throw new VaeConfigException(source, $"norm_type '{nt.GetString()}' is not supported (only 'group')");

        var config = new VaeConfig
        {
            InChannels = Int("in_channels", defaults.InChannels),
            OutChannels = Int("out_channels", defaults.OutChannels),
            BlockOutChannels = channels,
            LayersPerBlock = Int("layers_per_block", defaults.LayersPerBlock),
            LatentChannels = Int("latent_channels", defaults.LatentChannels),
            NormNumGroups = Int("norm_num_groups", defaults.NormNumGroups),
            ScalingFactor = Double("scaling_factor", defaults.ScalingFactor),
            ShiftFactor = Double("shift_factor", 0.0),
            UseQuantConv = Bool("use_quant_conv", defaults.UseQuantConv),
            UsePostQuantConv = Bool("use_post_quant_conv", defaults.UsePostQuantConv),
            MidBlockAddAttention = Bool("mid_block_add_attention", defaults.MidBlockAddAttention),
        };
        config.Validate(source);
        return config;
    }

    private static void CheckBlockTypes(List<string>? types, string expected, string key, int count, string source)
    {
        if (types is null) return;
        if (types.Count != count)
            throw new VaeConfigException(source, $"'{key}' has {types.Count} entries but block_out_channels has {count}");
        var bad = types.FirstOrDefault(t => t != expected);
        if (bad is not null) throw new VaeConfigException(source, $"'{key}' entry '{bad}' is not supported (only {expected})");
    }

    /// <summary>Throws <see cref="VaeConfigException"/> when the sizes cannot build a model.</summary>
    public void Validate(string source = "<config>")
    {
        if (BlockOutChannels.Count == 0) throw new VaeConfigException(source, "block_out_channels is empty");
        if (BlockOutChannels.Count > 8) throw new VaeConfigException(source, $"{BlockOutChannels.Count} blocks is more than the 8 supported");
        if (InChannels <= 0 || OutChannels <= 0 || LatentChannels <= 0 || LayersPerBlock <= 0 || NormNumGroups <= 0)
            throw new VaeConfigException(source, "in_channels, out_channels, latent_channels, layers_per_block and norm_num_groups must be positive");
        foreach (var c in BlockOutChannels)
            if (c <= 0 || c % NormNumGroups != 0)
                throw new VaeConfigException(source, $"block_out_channels entry {c} is not a positive multiple of norm_num_groups {NormNumGroups}");
        if (ScalingFactor == 0 || !double.IsFinite(ScalingFactor) || !double.IsFinite(ShiftFactor))
            throw new VaeConfigException(source, $"scaling_factor {ScalingFactor} / shift_factor {ShiftFactor} are not usable");
    }
}
