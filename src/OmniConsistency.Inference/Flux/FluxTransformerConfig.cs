using System.Text.Json;

namespace OmniConsistency.Inference.Flux;

/// <summary>
/// The architecture of a FLUX transformer as diffusers' <c>FluxTransformer2DModel</c> config.json describes it.
/// Keys missing from the file (or null) take diffusers' constructor defaults (v0.32.2), e.g. <c>axes_dims_rope</c>
/// [16,56,56], <c>guidance_embeds</c> false, <c>out_channels</c> = <c>in_channels</c>.
/// </summary>
public sealed record FluxTransformerConfig
{
    public int PatchSize { get; init; } = 1;
    public int InChannels { get; init; } = 64;
    /// <summary>Null in the file means "same as in_channels"; this property is already resolved.</summary>
    public int OutChannels { get; init; } = 64;
    public int NumLayers { get; init; } = 19;
    public int NumSingleLayers { get; init; } = 38;
    public int AttentionHeadDim { get; init; } = 128;
    public int NumAttentionHeads { get; init; } = 24;
    public int JointAttentionDim { get; init; } = 4096;
    public int PooledProjectionDim { get; init; } = 768;
    public bool GuidanceEmbeds { get; init; }
    public IReadOnlyList<int> AxesDimsRope { get; init; } = [16, 56, 56];

    /// <summary>RoPE base (FluxPosEmbed's theta; not a config key in diffusers).</summary>
    public double RopeTheta { get; init; } = 10000;
    /// <summary>MLP hidden width factor of every block (4 in FLUX; not a config key in diffusers).</summary>
    public int MlpRatio { get; init; } = 4;

    public int InnerDim => NumAttentionHeads * AttentionHeadDim;
    public int MlpHiddenDim => InnerDim * MlpRatio;
    public int TotalAttentionLayers => NumLayers + NumSingleLayers;

    /// <summary>
    /// The diffusers attention-processor name of attention layer <paramref name="layer"/>: double blocks are layers
    /// 0…L−1 ("transformer_blocks.i.attn.processor"), single blocks L…L+S−1 ("single_transformer_blocks.j.attn.processor").
    /// </summary>
    public string AttentionProcessorName(int layer) =>
        layer < 0 || layer >= TotalAttentionLayers
            ? throw new ArgumentOutOfRangeException(nameof(layer), $"layer {layer} is outside 0..{TotalAttentionLayers - 1}")
            : layer < NumLayers
                ? $"transformer_blocks.{layer}.attn.processor"
                : $"single_transformer_blocks.{layer - NumLayers}.attn.processor";

    public bool Equals(FluxTransformerConfig? other) =>
        other is not null && PatchSize == other.PatchSize && InChannels == other.InChannels && OutChannels == other.OutChannels
        && NumLayers == other.NumLayers && NumSingleLayers == other.NumSingleLayers && AttentionHeadDim == other.AttentionHeadDim
        && NumAttentionHeads == other.NumAttentionHeads && JointAttentionDim == other.JointAttentionDim
        && PooledProjectionDim == other.PooledProjectionDim && GuidanceEmbeds == other.GuidanceEmbeds
        && AxesDimsRope.SequenceEqual(other.AxesDimsRope) && RopeTheta == other.RopeTheta && MlpRatio == other.MlpRatio;

    public override int GetHashCode() => HashCode.Combine(InnerDim, NumLayers, NumSingleLayers, JointAttentionDim, PooledProjectionDim, GuidanceEmbeds, AxesDimsRope.Count);

    /// <summary>Parses a diffusers transformer config.json; throws <see cref="FluxConfigException"/> on bad values.</summary>
    public static FluxTransformerConfig FromJsonFile(string path)
    {
        if (!File.Exists(path)) throw new FluxConfigException(path, "file not found");
        try
        {
            return Parse(File.ReadAllText(path), path);
        }
        catch (JsonException e)
        {
            throw new FluxConfigException(path, $"not valid JSON ({e.Message})", e);
        }
    }

    public static FluxTransformerConfig Parse(string json, string source = "config")
    {
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new FluxConfigException(source, "the config is not a JSON object");
        var d = new FluxTransformerConfig();
        int Int(string key, int fallback) => TryGet(root, key) is { } v
            ? v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i : throw new FluxConfigException(source, $"'{key}' must be an integer, got {v}")
            : fallback;
        int inChannels = Int("in_channels", d.InChannels);
        var config = new FluxTransformerConfig
        {
            PatchSize = Int("patch_size", d.PatchSize),
            InChannels = inChannels,
            OutChannels = Int("out_channels", inChannels),
            NumLayers = Int("num_layers", d.NumLayers),
            NumSingleLayers = Int("num_single_layers", d.NumSingleLayers),
            AttentionHeadDim = Int("attention_head_dim", d.AttentionHeadDim),
            NumAttentionHeads = Int("num_attention_heads", d.NumAttentionHeads),
            JointAttentionDim = Int("joint_attention_dim", d.JointAttentionDim),
            PooledProjectionDim = Int("pooled_projection_dim", d.PooledProjectionDim),
            GuidanceEmbeds = TryGet(root, "guidance_embeds") is { } g
                ? g.ValueKind is JsonValueKind.True or JsonValueKind.False ? g.GetBoolean() : throw new FluxConfigException(source, $"'guidance_embeds' must be true or false, got {g}")
                : d.GuidanceEmbeds,
            AxesDimsRope = TryGet(root, "axes_dims_rope") is { } a
                ? a.ValueKind == JsonValueKind.Array && a.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out _))
                    ? a.EnumerateArray().Select(e => e.GetInt32()).ToArray()
                    : throw new FluxConfigException(source, $"'axes_dims_rope' must be a list of integers, got {a}")
                : d.AxesDimsRope,
        };
        config.Validate(source);
        return config;
    }

    private static JsonElement? TryGet(JsonElement root, string key) =>
        root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    /// <summary>Throws <see cref="FluxConfigException"/> when sizes are not positive or the RoPE axes do not fill a head.</summary>
    public void Validate(string source = "config")
    {
        (string, int)[] positive =
        [
            ("patch_size", PatchSize), ("in_channels", InChannels), ("out_channels", OutChannels), ("attention_head_dim", AttentionHeadDim),
            ("num_attention_heads", NumAttentionHeads), ("joint_attention_dim", JointAttentionDim), ("pooled_projection_dim", PooledProjectionDim),
        ];
        foreach (var (name, value) in positive)
            if (value <= 0) throw new FluxConfigException(source, $"'{name}' must be positive, got {value}");
        if (NumLayers < 0 || NumSingleLayers < 0) throw new FluxConfigException(source, "layer counts must not be negative");
        if (AxesDimsRope.Count == 0 || AxesDimsRope.Any(x => x <= 0 || x % 2 != 0))
            throw new FluxConfigException(source, $"'axes_dims_rope' must be positive even sizes, got [{string.Join(",", AxesDimsRope)}]");
        if (AxesDimsRope.Sum() != AttentionHeadDim)
            throw new FluxConfigException(source, $"'axes_dims_rope' [{string.Join(",", AxesDimsRope)}] sums to {AxesDimsRope.Sum()}, but attention_head_dim is {AttentionHeadDim}");
    }
}

/// <summary>A model config that cannot describe a valid model.</summary>
public sealed class FluxConfigException(string source, string problem, Exception? inner = null)
    : Exception($"Invalid FLUX transformer config '{source}': {problem}.", inner)
{
    public string ConfigSource { get; } = source;
}
