using System.Text.RegularExpressions;
using OmniConsistency.Inference.IO;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Vae;

/// <summary>
/// The one place where other VAE checkpoint layouts become diffusers names, tensor by tensor at load time:
/// Black Forest Labs' <c>ae.safetensors</c> (the LDM layout, diffusers' convert_ldm_vae_checkpoint) and old diffusers
/// files whose mid-block attention is named query/key/value/proj_attn.
/// </summary>
public static partial class VaeCheckpointLayouts
{
    /// <summary>True when the keys use the BFL/LDM layout (encoder.down.N.block.M…, decoder.up…, mid.block_1…).</summary>
    public static bool IsBfl(IEnumerable<string> keys) =>
        keys.Any(k => BflMarker().IsMatch(k));

    /// <summary>
    /// Presents a BFL/LDM-layout VAE under diffusers names. <paramref name="blockCount"/> = len(block_out_channels):
    /// the decoder's <c>up.{k}</c> is diffusers' <c>up_blocks.{blockCount-1-k}</c>. Mid-attention 1×1 conv weights
    /// [C,C,1,1] become Linear weights [C,C]. Keys with no diffusers counterpart keep their name, so a strict load
    /// reports them as unexpected.
    /// </summary>
    public static MappedTensorSource FromBfl(ITensorSource bfl, int blockCount)
    {
        var entries = new Dictionary<string, MappedTensorSource.Entry>(StringComparer.Ordinal);
        var sourceOf = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var key in bfl.Keys)
        {
            var name = BflKeyToDiffusers(key, blockCount) ?? key;
            Add(entries, sourceOf, name, key, bfl, bfl.Description);
        }
        return new MappedTensorSource($"{bfl.Description} (BFL VAE layout → diffusers)", entries);
    }

    /// <summary>A diffusers-layout source with deprecated attention names (query/key/value/proj_attn) renamed; the source itself when it has none.</summary>
    public static ITensorSource FromDiffusers(ITensorSource source)
    {
        if (!source.Keys.Any(k => DeprecatedAttention().IsMatch(k))) return source;
        var entries = new Dictionary<string, MappedTensorSource.Entry>(StringComparer.Ordinal);
        var sourceOf = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var key in source.Keys)
        {
            var m = DeprecatedAttention().Match(key);
            var name = m.Success ? $"{m.Groups[1].Value}{DeprecatedAttentionName(m.Groups[2].Value)}.{m.Groups[3].Value}" : key;
            Add(entries, sourceOf, name, key, source, source.Description);
        }
        return new MappedTensorSource($"{source.Description} (deprecated attention names renamed)", entries);
    }

    /// <summary>The diffusers name of one BFL/LDM VAE key, or null when it has none.</summary>
    public static string? BflKeyToDiffusers(string key, int blockCount)
    {
        if (key.StartsWith("quant_conv.", StringComparison.Ordinal) || key.StartsWith("post_quant_conv.", StringComparison.Ordinal))
            return key;
        string part;
        bool encoder;
        if (key.StartsWith("encoder.", StringComparison.Ordinal)) (part, encoder) = (key["encoder.".Length..], true);
        else if (key.StartsWith("decoder.", StringComparison.Ordinal)) (part, encoder) = (key["decoder.".Length..], false);
        else return null;
        var prefix = encoder ? "encoder." : "decoder.";

        Match m;
        if ((m = Top().Match(part)).Success)
            return prefix + (m.Groups[1].Value == "norm_out" ? "conv_norm_out" : m.Groups[1].Value) + "." + m.Groups[2].Value;
        if ((m = MidResnet().Match(part)).Success)
            return Resnet(m.Groups[2].Value) is { } r ? $"{prefix}mid_block.resnets.{int.Parse(m.Groups[1].Value) - 1}.{r}" : null;
        if ((m = MidAttention().Match(part)).Success)
            return $"{prefix}mid_block.attentions.0.{BflAttentionName(m.Groups[1].Value)}.{m.Groups[2].Value}";
        if (encoder && (m = DownResnet().Match(part)).Success)
            return BlockIndex(m.Groups[1].Value, blockCount) is { } b && Resnet(m.Groups[3].Value) is { } rd
                ? $"{prefix}down_blocks.{b}.resnets.{m.Groups[2].Value}.{rd}" : null;
        if (encoder && (m = Downsample().Match(part)).Success)
            return BlockIndex(m.Groups[1].Value, blockCount) is { } b ? $"{prefix}down_blocks.{b}.downsamplers.0.conv.{m.Groups[2].Value}" : null;
        if (!encoder && (m = UpResnet().Match(part)).Success)
            return BlockIndex(m.Groups[1].Value, blockCount) is { } k && Resnet(m.Groups[3].Value) is { } ru
                ? $"{prefix}up_blocks.{blockCount - 1 - k}.resnets.{m.Groups[2].Value}.{ru}" : null;
        if (!encoder && (m = Upsample().Match(part)).Success)
            return BlockIndex(m.Groups[1].Value, blockCount) is { } k ? $"{prefix}up_blocks.{blockCount - 1 - k}.upsamplers.0.conv.{m.Groups[2].Value}" : null;
        return null;
    }

    private static void Add(Dictionary<string, MappedTensorSource.Entry> entries, Dictionary<string, string> sourceOf,
        string name, string key, ITensorSource source, string description)
    {
        if (sourceOf.TryGetValue(name, out var other))
            throw new CheckpointMismatchException(description, "AutoencoderKL", [], [$"{key} and {other} both map to {name}"], []);
        sourceOf[name] = key;
        var shape = source.Shape(key);
        // Attention projections stored as 1×1 convolutions are the same matrix as a Linear weight.
        bool squeeze = IsAttentionProjectionWeight(name) && shape.Length == 4 && shape[2] == 1 && shape[3] == 1;
        var target = squeeze ? [shape[0], shape[1]] : shape;
        entries[name] = new MappedTensorSource.Entry(target, squeeze
            ? (dtype, device) => source.Load(key, dtype, device).reshape(target)
            : (dtype, device) => source.Load(key, dtype, device));
    }

    private static bool IsAttentionProjectionWeight(string name) => AttentionProjectionWeight().IsMatch(name);

    private static int? BlockIndex(string text, int blockCount) =>
        int.TryParse(text, out var i) && i >= 0 && i < blockCount ? i : null;

    private static string? Resnet(string rest) => ResnetParam().Match(rest) is { Success: true } m
        ? (m.Groups[1].Value == "nin_shortcut" ? "conv_shortcut" : m.Groups[1].Value) + "." + m.Groups[2].Value
        : null;

    private static string BflAttentionName(string name) => name switch
    {
        "norm" => "group_norm",
        "q" => "to_q",
        "k" => "to_k",
        "v" => "to_v",
        _ => "to_out.0", // proj_out
    };

    private static string DeprecatedAttentionName(string name) => name switch
    {
        "query" => "to_q",
        "key" => "to_k",
        "value" => "to_v",
        _ => "to_out.0", // proj_attn
    };

    [GeneratedRegex(@"^(encoder\.down\.\d+\.|decoder\.up\.\d+\.|(encoder|decoder)\.mid\.(block_\d|attn_1)\.)")]
    private static partial Regex BflMarker();
    [GeneratedRegex(@"^(conv_in|conv_out|norm_out)\.(weight|bias)$")]
    private static partial Regex Top();
    [GeneratedRegex(@"^mid\.block_([12])\.(.+)$")]
    private static partial Regex MidResnet();
    [GeneratedRegex(@"^mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$")]
    private static partial Regex MidAttention();
    [GeneratedRegex(@"^down\.(\d+)\.block\.(\d+)\.(.+)$")]
    private static partial Regex DownResnet();
    [GeneratedRegex(@"^down\.(\d+)\.downsample\.conv\.(weight|bias)$")]
    private static partial Regex Downsample();
    [GeneratedRegex(@"^up\.(\d+)\.block\.(\d+)\.(.+)$")]
    private static partial Regex UpResnet();
    [GeneratedRegex(@"^up\.(\d+)\.upsample\.conv\.(weight|bias)$")]
    private static partial Regex Upsample();
    [GeneratedRegex(@"^(norm1|conv1|norm2|conv2|nin_shortcut)\.(weight|bias)$")]
    private static partial Regex ResnetParam();
    [GeneratedRegex(@"^(.*\.mid_block\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$")]
    private static partial Regex DeprecatedAttention();
    [GeneratedRegex(@"\.mid_block\.attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$")]
    private static partial Regex AttentionProjectionWeight();
}
