using System.Text.RegularExpressions;
using OmniConsistency.Inference.IO;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Flux;

/// <summary>One run of rows copied from a BFL tensor into a diffusers tensor (dim 0; other dims unchanged).</summary>
public sealed record BflRowMapping(string BflKey, string DiffusersKey, long DiffusersFirstRow, long BflFirstRow, long BflEndRow);

/// <summary>
/// Presents a Black Forest Labs single-file FLUX checkpoint (<c>flux1-dev.safetensors</c>; keys with or without the
/// <c>model.diffusion_model.</c> prefix, which the caller strips) under diffusers names, converting tensor by tensor
/// at load time: renames, fused qkv split [D,D,D], single-block linear1 split [D,D,D,mlp], <c>.scale</c> → <c>.weight</c>,
/// and the (shift, scale) halves of the final modulation swapped into diffusers' (scale, shift).
/// Sizes come from the config, never FLUX.1's 3072. Unrecognised BFL keys pass through under their own names, so a
/// strict load reports them as unexpected.
/// </summary>
public static partial class BflFluxCheckpointLayout
{
    public const string ComfyPrefix = "model.diffusion_model.";

    private sealed record Piece(string BflKey, long Start, long Length);

    /// <summary>Converts; throws <see cref="CheckpointMismatchException"/> when a fused tensor's rows do not fit the config.</summary>
    public static (MappedTensorSource Source, IReadOnlyList<BflRowMapping> Mapping, IReadOnlyList<string> Unconsumed) ToDiffusers(
        ITensorSource bfl, FluxTransformerConfig config)
    {
        long d = config.InnerDim, mlp = config.MlpHiddenDim;
        var targets = new Dictionary<string, List<Piece>>(StringComparer.Ordinal);
        var unconsumed = new List<string>();
        var misShaped = new List<string>();

        void Split(string key, string suffix, long[] rows, params string[] names)
        {
            if (names.Any(n => targets.ContainsKey(n + suffix)))
            {
                unconsumed.Add(key);
                return;
            }
            long dim0 = bfl.Shape(key) is { Length: > 0 } s ? s[0] : -1;
            if (dim0 != rows.Sum())
            {
                misShaped.Add($"{key} (checkpoint [{string.Join(",", bfl.Shape(key))}], the config needs {rows.Sum()} rows = [{string.Join(" + ", rows)}])");
                return;
            }
            long start = 0;
            for (int i = 0; i < names.Length; i++)
            {
                targets[names[i] + suffix] = [new Piece(key, start, rows[i])];
                start += rows[i];
            }
        }

        foreach (var key in bfl.Keys)
        {
            var m = KeyPattern().Match(key);
            // Blocks beyond the config's counts stay under their BFL names, so the loader reports them as unexpected.
            if (!m.Success || !BlockInRange(m.Groups["module"].Value, config))
            {
                unconsumed.Add(key);
                continue;
            }
            string module = m.Groups["module"].Value, param = m.Groups["param"].Value;
            bool isScale = param == "scale";
            string suffix = isScale ? ".weight" : "." + param;
            if (!isScale && FusedQkv().Match(module) is { Success: true } qkv)
            {
                var prefix = $"transformer_blocks.{qkv.Groups["n"].Value}.attn.";
                var names = qkv.Groups["stream"].Value == "img"
                    ? new[] { "to_q", "to_k", "to_v" }
                    : new[] { "add_q_proj", "add_k_proj", "add_v_proj" };
                Split(key, suffix, [d, d, d], names.Select(x => prefix + x).ToArray());
            }
            else if (!isScale && Linear1().Match(module) is { Success: true } l1)
            {
                var prefix = $"single_transformer_blocks.{l1.Groups["n"].Value}.";
                Split(key, suffix, [d, d, d, mlp], prefix + "attn.to_q", prefix + "attn.to_k", prefix + "attn.to_v", prefix + "proj_mlp");
            }
            else if (!isScale && module == "final_layer.adaLN_modulation.1" && !targets.ContainsKey("norm_out.linear" + suffix))
            {
                long dim0 = bfl.Shape(key) is { Length: > 0 } s ? s[0] : -1;
                if (dim0 != 2 * d)
                    misShaped.Add($"{key} (checkpoint [{string.Join(",", bfl.Shape(key))}], the config needs {2 * d} rows)");
                else
                    targets["norm_out.linear" + suffix] = [new Piece(key, d, d), new Piece(key, 0, d)];
            }
            else if (Rename(module) is { } renamed && isScale == renamed.IsNorm && !targets.ContainsKey(renamed.Name + suffix))
            {
                targets[renamed.Name + suffix] = [new Piece(key, 0, -1)];
            }
            else
            {
                unconsumed.Add(key);
            }
        }
        if (misShaped.Count > 0)
            throw new CheckpointMismatchException(bfl.Description, "FluxTransformer2DModel (BFL layout)", [], [], misShaped);

        var entries = new Dictionary<string, MappedTensorSource.Entry>(StringComparer.Ordinal);
        var mapping = new List<BflRowMapping>();
        foreach (var (name, pieces) in targets)
        {
            var shape = (long[])bfl.Shape(pieces[0].BflKey).Clone();
            if (pieces[0].Length >= 0) shape[0] = pieces.Sum(p => p.Length);
            entries[name] = new MappedTensorSource.Entry(shape, (dtype, device) => LoadPieces(bfl, pieces, dtype, device));
            long row = 0;
            foreach (var p in pieces)
            {
                long len = p.Length >= 0 ? p.Length : shape.Length > 0 ? shape[0] : 1;
                mapping.Add(new BflRowMapping(p.BflKey, name, row, p.Start, p.Start + len));
                row += len;
            }
        }
        foreach (var key in unconsumed)
            entries[key] = new MappedTensorSource.Entry(bfl.Shape(key), (dtype, device) => bfl.Load(key, dtype, device));
        return (new MappedTensorSource($"{bfl.Description} (BFL layout → diffusers)", entries), mapping, unconsumed);
    }

    /// <summary>Opens a BFL single file, stripping the ComfyUI prefix when the file uses it, and converts it.</summary>
    public static MappedTensorSource Open(SafetensorsCheckpoint checkpoint, FluxTransformerConfig config) =>
        ToDiffusers(StripComfyPrefix(new CheckpointTensorSource(checkpoint)), config).Source;

    /// <summary>
    /// When some keys carry <c>model.diffusion_model.</c> (ComfyUI-style files that also hold VAE / text encoders),
    /// a view of only those keys with the prefix removed; otherwise the source itself.
    /// </summary>
    public static ITensorSource StripComfyPrefix(ITensorSource source)
    {
        if (!source.Keys.Any(k => k.StartsWith(ComfyPrefix, StringComparison.Ordinal))) return source;
        var entries = source.Keys.Where(k => k.StartsWith(ComfyPrefix, StringComparison.Ordinal)).ToDictionary(
            k => k[ComfyPrefix.Length..],
            k => new MappedTensorSource.Entry(source.Shape(k), (dtype, device) => source.Load(k, dtype, device)),
            StringComparer.Ordinal);
        return new MappedTensorSource($"{source.Description} (prefix '{ComfyPrefix}')", entries);
    }

    /// <summary>True when the keys look like the BFL layout (with or without the ComfyUI prefix).</summary>
    public static bool IsBflLayout(IEnumerable<string> keys) => keys.Any(k =>
    {
        var stripped = k.StartsWith(ComfyPrefix, StringComparison.Ordinal) ? k[ComfyPrefix.Length..] : k;
        return stripped.StartsWith("double_blocks.", StringComparison.Ordinal) || stripped.StartsWith("single_blocks.", StringComparison.Ordinal)
            || stripped.StartsWith("img_in.", StringComparison.Ordinal);
    });

    private static Tensor LoadPieces(ITensorSource bfl, IReadOnlyList<Piece> pieces, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var full = bfl.Load(pieces[0].BflKey, dtype, device);
        var result = pieces.Count == 1 && pieces[0].Length < 0
            ? full
            : cat(pieces.Select(p => full.narrow(0, p.Start, p.Length)).ToList(), 0);
        return result.contiguous().MoveToOuterDisposeScope();
    }

    private static bool BlockInRange(string module, FluxTransformerConfig config)
    {
        if (DoubleModule().Match(module) is { Success: true } dm) return int.TryParse(dm.Groups["n"].Value, out var n) && n < config.NumLayers;
        if (SingleModule().Match(module) is { Success: true } sm) return int.TryParse(sm.Groups["n"].Value, out var n) && n < config.NumSingleLayers;
        return true;
    }

    private static (string Name, bool IsNorm)? Rename(string module)
    {
        switch (module)
        {
            case "img_in": return ("x_embedder", false);
            case "txt_in": return ("context_embedder", false);
            case "time_in.in_layer": return ("time_text_embed.timestep_embedder.linear_1", false);
            case "time_in.out_layer": return ("time_text_embed.timestep_embedder.linear_2", false);
            case "vector_in.in_layer": return ("time_text_embed.text_embedder.linear_1", false);
            case "vector_in.out_layer": return ("time_text_embed.text_embedder.linear_2", false);
            case "guidance_in.in_layer": return ("time_text_embed.guidance_embedder.linear_1", false);
            case "guidance_in.out_layer": return ("time_text_embed.guidance_embedder.linear_2", false);
            case "final_layer.linear": return ("proj_out", false);
        }
        if (DoubleModule().Match(module) is { Success: true } dm)
        {
            var p = $"transformer_blocks.{dm.Groups["n"].Value}.";
            return dm.Groups["rest"].Value switch
            {
                "img_mod.lin" => (p + "norm1.linear", false),
                "txt_mod.lin" => (p + "norm1_context.linear", false),
                "img_attn.proj" => (p + "attn.to_out.0", false),
                "txt_attn.proj" => (p + "attn.to_add_out", false),
                "img_mlp.0" => (p + "ff.net.0.proj", false),
                "img_mlp.2" => (p + "ff.net.2", false),
                "txt_mlp.0" => (p + "ff_context.net.0.proj", false),
                "txt_mlp.2" => (p + "ff_context.net.2", false),
                "img_attn.norm.query_norm" => (p + "attn.norm_q", true),
                "img_attn.norm.key_norm" => (p + "attn.norm_k", true),
                "txt_attn.norm.query_norm" => (p + "attn.norm_added_q", true),
                "txt_attn.norm.key_norm" => (p + "attn.norm_added_k", true),
                _ => null,
            };
        }
        if (SingleModule().Match(module) is { Success: true } sm)
        {
            var p = $"single_transformer_blocks.{sm.Groups["n"].Value}.";
            return sm.Groups["rest"].Value switch
            {
                "linear2" => (p + "proj_out", false),
                "modulation.lin" => (p + "norm.linear", false),
                "norm.query_norm" => (p + "attn.norm_q", true),
                "norm.key_norm" => (p + "attn.norm_k", true),
                _ => null,
            };
        }
        return null;
    }

    [GeneratedRegex(@"^(?<module>.+)\.(?<param>weight|bias|scale)$")]
    private static partial Regex KeyPattern();

    [GeneratedRegex(@"^double_blocks\.(?<n>\d+)\.(?<stream>img|txt)_attn\.qkv$")]
    private static partial Regex FusedQkv();

    [GeneratedRegex(@"^single_blocks\.(?<n>\d+)\.linear1$")]
    private static partial Regex Linear1();

    [GeneratedRegex(@"^double_blocks\.(?<n>\d+)\.(?<rest>.+)$")]
    private static partial Regex DoubleModule();

    [GeneratedRegex(@"^single_blocks\.(?<n>\d+)\.(?<rest>.+)$")]
    private static partial Regex SingleModule();
}
