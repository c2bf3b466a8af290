using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Flux;

/// <summary>Small FLUX models with random weights for unit tests, and their inputs.</summary>
public static class FluxTestModels
{
    /// <summary>The hidden golden set's second architecture: 3 heads × 16, axes [4,4,8], 3 double + 1 single block.</summary>
    public static FluxTransformerConfig TinyH { get; } = new()
    {
        NumLayers = 3, NumSingleLayers = 1, NumAttentionHeads = 3, AttentionHeadDim = 16, JointAttentionDim = 24,
        PooledProjectionDim = 40, GuidanceEmbeds = true, AxesDimsRope = [4, 4, 8],
    };

    /// <summary>Linear weights U(±1/√fan_in), biases U(±0.1), norm scales 1 + U(±0.25) (the golden generator's recipe).</summary>
    public static FluxTransformer2DModel Random(FluxTransformerConfig config, long seed, ScalarType dtype = ScalarType.Float32)
    {
        var model = new FluxTransformer2DModel(config, new ParameterFactory(dtype, CPU));
        var g = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            using var scope = NewDisposeScope();
            var u = rand(p.shape, ScalarType.Float32, generator: g) * 2 - 1;
            var value = name.EndsWith(".bias", StringComparison.Ordinal) ? u * 0.1
                : p.ndim == 1 ? u * 0.25 + 1
                : u / Math.Sqrt(p.shape[1]);
            p.copy_(value);
        }
        return model;
    }

    public static Dictionary<string, Tensor> StateDict(FluxTransformer2DModel model) =>
        model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter, StringComparer.Ordinal);

    /// <summary>Inputs for N = rows×cols image tokens with (0,row,col) ids and T text tokens.</summary>
    public static FluxTransformerInputs Inputs(FluxTransformerConfig config, long batch, long textLength, long rows, long cols, long seed, bool guidance = true)
    {
        var g = new Generator((ulong)seed);
        var ids = ImageIds(rows, cols, config.AxesDimsRope.Count);
        return new FluxTransformerInputs(
            randn([batch, rows * cols, config.InChannels], generator: g),
            randn([batch, textLength, config.JointAttentionDim], generator: g),
            randn([batch, config.PooledProjectionDim], generator: g),
            rand([batch], generator: g),
            guidance ? full([batch], 3.5f) : null,
            ids,
            zeros(textLength, config.AxesDimsRope.Count));
    }

    public static Tensor ImageIds(long rows, long cols, int axes)
    {
        var ids = zeros(rows * cols, axes);
        ids[.., 1] = arange(rows, dtype: ScalarType.Float32).repeat_interleave(cols);
        ids[.., 2] = arange(cols, dtype: ScalarType.Float32).repeat(rows);
        return ids;
    }

    /// <summary>The inverse of the BFL → diffusers conversion (test-side, written independently of the converter).</summary>
    public static Dictionary<string, Tensor> ToBflLayout(IReadOnlyDictionary<string, Tensor> diffusers, FluxTransformerConfig config)
    {
        var bfl = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        void Put(string bflName, string diffName)
        {
            foreach (var p in new[] { "weight", "bias" })
                if (diffusers.TryGetValue($"{diffName}.{p}", out var t)) bfl[$"{bflName}.{p}"] = t;
        }
        void Fused(string bflName, params string[] parts)
        {
            foreach (var p in new[] { "weight", "bias" })
                bfl[$"{bflName}.{p}"] = cat(parts.Select(x => diffusers[$"{x}.{p}"]).ToList(), 0);
        }
        Put("img_in", "x_embedder");
        Put("txt_in", "context_embedder");
        Put("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1");
        Put("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2");
        Put("vector_in.in_layer", "time_text_embed.text_embedder.linear_1");
        Put("vector_in.out_layer", "time_text_embed.text_embedder.linear_2");
        Put("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1");
        Put("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2");
        for (int i = 0; i < config.NumLayers; i++)
        {
            string b = $"double_blocks.{i}", t = $"transformer_blocks.{i}";
            Fused($"{b}.img_attn.qkv", $"{t}.attn.to_q", $"{t}.attn.to_k", $"{t}.attn.to_v");
            Fused($"{b}.txt_attn.qkv", $"{t}.attn.add_q_proj", $"{t}.attn.add_k_proj", $"{t}.attn.add_v_proj");
            bfl[$"{b}.img_attn.norm.query_norm.scale"] = diffusers[$"{t}.attn.norm_q.weight"];
            bfl[$"{b}.img_attn.norm.key_norm.scale"] = diffusers[$"{t}.attn.norm_k.weight"];
            bfl[$"{b}.txt_attn.norm.query_norm.scale"] = diffusers[$"{t}.attn.norm_added_q.weight"];
            bfl[$"{b}.txt_attn.norm.key_norm.scale"] = diffusers[$"{t}.attn.norm_added_k.weight"];
            Put($"{b}.img_attn.proj", $"{t}.attn.to_out.0");
            Put($"{b}.txt_attn.proj", $"{t}.attn.to_add_out");
            Put($"{b}.img_mlp.0", $"{t}.ff.net.0.proj");
            Put($"{b}.img_mlp.2", $"{t}.ff.net.2");
            Put($"{b}.txt_mlp.0", $"{t}.ff_context.net.0.proj");
            Put($"{b}.txt_mlp.2", $"{t}.ff_context.net.2");
            Put($"{b}.img_mod.lin", $"{t}.norm1.linear");
            Put($"{b}.txt_mod.lin", $"{t}.norm1_context.linear");
        }
        for (int i = 0; i < config.NumSingleLayers; i++)
        {
            string b = $"single_blocks.{i}", t = $"single_transformer_blocks.{i}";
            Fused($"{b}.linear1", $"{t}.attn.to_q", $"{t}.attn.to_k", $"{t}.attn.to_v", $"{t}.proj_mlp");
            Put($"{b}.linear2", $"{t}.proj_out");
            bfl[$"{b}.norm.query_norm.scale"] = diffusers[$"{t}.attn.norm_q.weight"];
            bfl[$"{b}.norm.key_norm.scale"] = diffusers[$"{t}.attn.norm_k.weight"];
            Put($"{b}.modulation.lin", $"{t}.norm.linear");
        }
        Put("final_layer.linear", "proj_out");
        foreach (var p in new[] { "weight", "bias" })
        {
            var halves = diffusers[$"norm_out.linear.{p}"].chunk(2, 0);
            bfl[$"final_layer.adaLN_modulation.1.{p}"] = cat([halves[1], halves[0]], 0);
        }
        return bfl;
    }

    public static string TempDir() => Directory.CreateTempSubdirectory("flux-tests-").FullName;

    /// <summary>Writes a diffusers transformer folder (config.json + weights) for a model.</summary>
    public static string WriteDiffusersFolder(FluxTransformer2DModel model, string dir)
    {
        var c = model.Config;
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {"_class_name": "FluxTransformer2DModel", "attention_head_dim": {{c.AttentionHeadDim}}, "axes_dims_rope": [{{string.Join(", ", c.AxesDimsRope)}}],
             "guidance_embeds": {{(c.GuidanceEmbeds ? "true" : "false")}}, "in_channels": {{c.InChannels}}, "joint_attention_dim": {{c.JointAttentionDim}},
             "num_attention_heads": {{c.NumAttentionHeads}}, "num_layers": {{c.NumLayers}}, "num_single_layers": {{c.NumSingleLayers}},
             "out_channels": null, "patch_size": 1, "pooled_projection_dim": {{c.PooledProjectionDim}}}
            """);
        SafetensorsWriter.Save(Path.Combine(dir, "diffusion_pytorch_model.safetensors"), StateDict(model));
        return dir;
    }
}
