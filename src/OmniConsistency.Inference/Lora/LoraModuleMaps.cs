using System.Text.RegularExpressions;

namespace OmniConsistency.Inference.Lora;

/// <summary>
/// How one source module's LoRA maps onto model modules: a plain module, a fused module whose B rows are split
/// over several modules (qkv, single-block linear1; A shared), or one whose B row halves are swapped (BFL's final
/// adaLN is [shift; scale], diffusers' norm_out.linear is [scale; shift]).
/// </summary>
internal sealed record LoraMapping(string Component, IReadOnlyList<string> Targets, bool SwapHalves = false)
{
    public bool IsSplit => Targets.Count > 1;
}

/// <summary>
/// Source-name → model-module tables, generated from the model's own module names so that any block count works.
/// BFL names (kohya <c>lora_unet_*</c> with '_' for '.', and peft files in BFL naming) map as diffusers' single-file
/// converter maps the base weights (FORMAT.md "Weights").
/// </summary>
internal sealed class LoraModuleMaps
{
    private static readonly Regex DoubleBlock = new(@"^transformer_blocks\.(\d+)\.", RegexOptions.CultureInvariant);
    private static readonly Regex SingleBlock = new(@"^single_transformer_blocks\.(\d+)\.", RegexOptions.CultureInvariant);

    private readonly Dictionary<string, LoraMapping> _bfl = new(StringComparer.Ordinal);
    private readonly Dictionary<string, LoraMapping> _kohya = new(StringComparer.Ordinal);

    public LoraModuleMaps(LoraTargetShapes transformer, LoraTargetShapes? textEncoder)
    {
        Transformer = transformer;
        TextEncoder = textEncoder;
        var doubles = BlockIndices(transformer, DoubleBlock);
        var singles = BlockIndices(transformer, SingleBlock);

        foreach (var n in doubles)
        {
            var p = $"transformer_blocks.{n}.";
            AddBfl($"double_blocks.{n}.img_attn.qkv", p + "attn.to_q", p + "attn.to_k", p + "attn.to_v");
            AddBfl($"double_blocks.{n}.txt_attn.qkv", p + "attn.add_q_proj", p + "attn.add_k_proj", p + "attn.add_v_proj");
            AddBfl($"double_blocks.{n}.img_attn.proj", p + "attn.to_out.0");
            AddBfl($"double_blocks.{n}.txt_attn.proj", p + "attn.to_add_out");
            AddBfl($"double_blocks.{n}.img_mlp.0", p + "ff.net.0.proj");
            AddBfl($"double_blocks.{n}.img_mlp.2", p + "ff.net.2");
            AddBfl($"double_blocks.{n}.txt_mlp.0", p + "ff_context.net.0.proj");
            AddBfl($"double_blocks.{n}.txt_mlp.2", p + "ff_context.net.2");
            AddBfl($"double_blocks.{n}.img_mod.lin", p + "norm1.linear");
            AddBfl($"double_blocks.{n}.txt_mod.lin", p + "norm1_context.linear");
        }
        foreach (var n in singles)
        {
            var p = $"single_transformer_blocks.{n}.";
            AddBfl($"single_blocks.{n}.linear1", p + "attn.to_q", p + "attn.to_k", p + "attn.to_v", p + "proj_mlp");
            AddBfl($"single_blocks.{n}.linear2", p + "proj_out");
            AddBfl($"single_blocks.{n}.modulation.lin", p + "norm.linear");
        }
        AddBfl("img_in", "x_embedder");
        AddBfl("txt_in", "context_embedder");
        foreach (var (bfl, diff) in new[] { ("time_in", "timestep_embedder"), ("vector_in", "text_embedder"), ("guidance_in", "guidance_embedder") })
        {
            AddBfl($"{bfl}.in_layer", $"time_text_embed.{diff}.linear_1");
            AddBfl($"{bfl}.out_layer", $"time_text_embed.{diff}.linear_2");
        }
        AddBfl("final_layer.linear", "proj_out");
        if (transformer.Contains("norm_out.linear"))
            _bfl["final_layer.adaLN_modulation.1"] = new LoraMapping(LoraComponent.Transformer, ["norm_out.linear"], SwapHalves: true);

        foreach (var (bfl, mapping) in _bfl) _kohya["lora_unet_" + Underscored(bfl)] = mapping;
        // kohya files trained on diffusers module names ("lora_transformer_single_transformer_blocks_0_attn_to_q").
        foreach (var name in transformer.Shapes.Keys)
            _kohya.TryAdd("lora_transformer_" + Underscored(name), new LoraMapping(LoraComponent.Transformer, [name]));
        if (textEncoder is not null)
            foreach (var name in textEncoder.Shapes.Keys)
            {
                var m = new LoraMapping(LoraComponent.TextEncoder, [name]);
                _kohya.TryAdd("lora_te1_" + Underscored(name), m);
                _kohya.TryAdd("lora_te_" + Underscored(name), m);
            }
    }

    public LoraTargetShapes Transformer { get; }
    public LoraTargetShapes? TextEncoder { get; }

    /// <summary>A BFL module name (dots), e.g. <c>double_blocks.0.img_attn.qkv</c>.</summary>
    public bool TryBfl(string name, out LoraMapping mapping) => _bfl.TryGetValue(name, out mapping!);

    /// <summary>A kohya module name, e.g. <c>lora_unet_double_blocks_0_img_attn_qkv</c> or <c>lora_te1_text_model_..._q_proj</c>.</summary>
    public bool TryKohya(string name, out LoraMapping mapping) => _kohya.TryGetValue(name, out mapping!);

    /// <summary>A diffusers module name of the transformer.</summary>
    public bool TryDiffusers(string name, out LoraMapping mapping)
    {
        mapping = new LoraMapping(LoraComponent.Transformer, [name]);
        return Transformer.Contains(name);
    }

    /// <summary>A transformers module name of the CLIP text encoder (only when one was given).</summary>
    public bool TryTextEncoder(string name, out LoraMapping mapping)
    {
        mapping = new LoraMapping(LoraComponent.TextEncoder, [name]);
        return TextEncoder?.Contains(name) == true;
    }

    public LoraTargetShapes ShapesOf(string component) =>
        component == LoraComponent.TextEncoder ? TextEncoder ?? throw new InvalidOperationException("no text encoder targets") : Transformer;

    private void AddBfl(string bfl, params string[] targets)
    {
        // Only modules the model has: a model without guidance embeds has no guidance_in.
        if (targets.All(Transformer.Contains)) _bfl[bfl] = new LoraMapping(LoraComponent.Transformer, targets);
    }

    private static string Underscored(string dotted) => dotted.Replace('.', '_');

    private static SortedSet<int> BlockIndices(LoraTargetShapes shapes, Regex pattern)
    {
        var set = new SortedSet<int>();
        foreach (var name in shapes.Shapes.Keys)
        {
            var m = pattern.Match(name);
            if (m.Success && int.TryParse(m.Groups[1].Value, out var n)) set.Add(n);
        }
        return set;
    }
}
