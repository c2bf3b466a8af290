using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Tests.Golden;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Lora;

public class LoraConversionTests
{
    // A non-FLUX size on purpose: D = 12 with an MLP of 40 (not 4D), 2 double and 2 single blocks.
    private const long D = 12, Mlp = 40;
    private static readonly Dictionary<string, LinearShape> Shapes = FluxLinearShapes.For(D, 2, 2, inChannels: 16, joint: 10, pooled: 6, mlp: Mlp);
    private static LoraModelTargets Targets => new(new LoraTargetShapes(Shapes));

    private static Tensor R(Generator g, params long[] shape) => randn(shape, generator: g);

    private static LoraAdapter Load(TempFolder dir, Dictionary<string, Tensor> tensors, string name = "lora.safetensors")
    {
        var path = dir.File(name);
        SafetensorsWriter.Save(path, tensors);
        return LoraLoader.Load(path, Targets, ScalarType.Float32, CPU);
    }

    /// <summary>ΔW of one module as the adapter computes it: scale·B·A.</summary>
    private static Tensor DeltaW(LoraAdapter a, string target)
    {
        var m = Assert.Single(a.Modules, x => x.Target == target);
        return m.B.to(ScalarType.Float64).matmul(m.A.to(ScalarType.Float64)).mul(m.Scale);
    }

    private static void AssertClose(Tensor expected, Tensor actual, double tol = 1e-5)
    {
        Assert.Equal(expected.shape, actual.shape);
        double diff = (expected.to(ScalarType.Float64) - actual.to(ScalarType.Float64)).abs().max().item<double>();
        Assert.True(diff <= tol, $"max |diff| {diff} > {tol}");
    }

    [Fact]
    public void DiffusersLayoutWithAndWithoutPrefixAndAlpha()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var g = new Generator(1);
        var a1 = R(g, 3, D); var b1 = R(g, D, 3);
        var a2 = R(g, 3, D + Mlp); var b2 = R(g, D, 3);
        using var adapter = Load(dir, new()
        {
            ["transformer.transformer_blocks.1.attn.to_k.lora_A.weight"] = a1,
            ["transformer.transformer_blocks.1.attn.to_k.lora_B.weight"] = b1,
            ["transformer.transformer_blocks.1.attn.to_k.alpha"] = tensor(6.0f),
            // no prefix, old lora.down/up spelling
            ["single_transformer_blocks.0.proj_out.lora.down.weight"] = a2,
            ["single_transformer_blocks.0.proj_out.lora.up.weight"] = b2,
            ["single_transformer_blocks.0.proj_out.alpha"] = tensor(6.0f),
        });
        Assert.Equal(new HashSet<LoraFormat> { LoraFormat.Diffusers }, adapter.Formats);
        AssertClose(b1.to(ScalarType.Float64).matmul(a1.to(ScalarType.Float64)) * 2.0, DeltaW(adapter, "transformer_blocks.1.attn.to_k"));
        AssertClose(b2.to(ScalarType.Float64).matmul(a2.to(ScalarType.Float64)) * 2.0, DeltaW(adapter, "single_transformer_blocks.0.proj_out"));
        Assert.Empty(adapter.UnsupportedKeys);
    }

    [Fact]
    public void DiffusersLoraBiasIsKept()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var g = new Generator(2);
        var bias = R(g, 2 * D);
        using var adapter = Load(dir, new()
        {
            ["transformer.norm_out.linear.lora_A.weight"] = R(g, 2, D),
            ["transformer.norm_out.linear.lora_B.weight"] = R(g, 2 * D, 2),
            ["transformer.norm_out.linear.lora_B.bias"] = bias,
        });
        var m = Assert.Single(adapter.Modules);
        Assert.Equal(1.0, m.Scale);
        AssertClose(bias, m.BBias!);
    }

    [Fact]
    public void KohyaFoldsAlphaAndSplitsQkvAndLinear1ByTheModelsDims()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var g = new Generator(3);
        const long r = 3; // not divisible by 3 parts with block structure: the dense split
        var qkvDown = R(g, r, D); var qkvUp = R(g, 3 * D, r);
        var l1Down = R(g, r, D); var l1Up = R(g, 3 * D + Mlp, r);
        var modDown = R(g, r, D); var modUp = R(g, 6 * D, r);
        using var adapter = Load(dir, new()
        {
            ["lora_unet_double_blocks_1_txt_attn_qkv.lora_down.weight"] = qkvDown,
            ["lora_unet_double_blocks_1_txt_attn_qkv.lora_up.weight"] = qkvUp,
            ["lora_unet_double_blocks_1_txt_attn_qkv.alpha"] = tensor(0.5f), // scale 1/6 < 0.5: split between down and up
            ["lora_unet_single_blocks_1_linear1.lora_down.weight"] = l1Down,
            ["lora_unet_single_blocks_1_linear1.lora_up.weight"] = l1Up,
            ["lora_unet_single_blocks_1_linear1.alpha"] = tensor(2.0f),
            ["lora_unet_double_blocks_0_img_mod_lin.lora_down.weight"] = modDown,
            ["lora_unet_double_blocks_0_img_mod_lin.lora_up.weight"] = modUp,
            ["lora_unet_double_blocks_0_img_mod_lin.alpha"] = tensor(3.0f),
        });
        Assert.Equal(new HashSet<LoraFormat> { LoraFormat.Kohya }, adapter.Formats);
        Assert.All(adapter.Modules, m => Assert.Equal(1.0, m.Scale));
        Assert.Equal(3 + 4 + 1, adapter.Modules.Count);

        var qkv = qkvUp.to(ScalarType.Float64).matmul(qkvDown.to(ScalarType.Float64)) * (0.5 / r);
        string[] txt = ["add_q_proj", "add_k_proj", "add_v_proj"];
        for (int i = 0; i < 3; i++)
            AssertClose(qkv.narrow(0, i * D, D), DeltaW(adapter, $"transformer_blocks.1.attn.{txt[i]}"));
        // the three parts share one A
        var parts = adapter.Modules.Where(m => m.Target.StartsWith("transformer_blocks.1.attn.add_", StringComparison.Ordinal)).ToList();
        Assert.All(parts, p => Assert.Same(parts[0].A, p.A));

        var l1 = l1Up.to(ScalarType.Float64).matmul(l1Down.to(ScalarType.Float64)) * (2.0 / r);
        AssertClose(l1.narrow(0, 0, D), DeltaW(adapter, "single_transformer_blocks.1.attn.to_q"));
        AssertClose(l1.narrow(0, 2 * D, D), DeltaW(adapter, "single_transformer_blocks.1.attn.to_v"));
        AssertClose(l1.narrow(0, 3 * D, Mlp), DeltaW(adapter, "single_transformer_blocks.1.proj_mlp"));
        AssertClose(modUp.to(ScalarType.Float64).matmul(modDown.to(ScalarType.Float64)), DeltaW(adapter, "transformer_blocks.0.norm1.linear"));
    }

    [Fact]
    public void KohyaSparseBlockDiagonalSplitGivesEachPartItsOwnRankRows()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var g = new Generator(4);
        const long r = 8; // 4 parts x rank 2
        long[] dims = [D, D, D, Mlp];
        var down = R(g, r, D);
        var up = zeros(3 * D + Mlp, r);
        long row = 0;
        for (int j = 0; j < 4; j++)
        {
            up.narrow(0, row, dims[j]).narrow(1, 2 * j, 2).copy_(R(g, dims[j], 2));
            row += dims[j];
        }
        using var adapter = Load(dir, new()
        {
            ["lora_unet_single_blocks_0_linear1.lora_down.weight"] = down,
            ["lora_unet_single_blocks_0_linear1.lora_up.weight"] = up,
            ["lora_unet_single_blocks_0_linear1.alpha"] = tensor(8.0f),
        });
        Assert.All(adapter.Modules, m => Assert.Equal(2, m.Rank));
        var full = up.to(ScalarType.Float64).matmul(down.to(ScalarType.Float64));
        AssertClose(full.narrow(0, D, D), DeltaW(adapter, "single_transformer_blocks.0.attn.to_k"));
        AssertClose(full.narrow(0, 3 * D, Mlp), DeltaW(adapter, "single_transformer_blocks.0.proj_mlp"));
        // Half the parts' memory: A is split, B keeps only the diagonal blocks.
        Assert.Equal((r * D + (3 * D + Mlp) * 2) * 4, adapter.Bytes);
    }

    [Fact]
    public void KohyaFinalLayerSwapsOnlyTheOutputHalves()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var g = new Generator(5);
        var down = R(g, 2, D); var up = R(g, 2 * D, 2);
        using var adapter = Load(dir, new()
        {
            ["lora_unet_final_layer_adaLN_modulation_1.lora_down.weight"] = down,
            ["lora_unet_final_layer_adaLN_modulation_1.lora_up.weight"] = up,
            ["lora_unet_final_layer_adaLN_modulation_1.alpha"] = tensor(2.0f),
            ["lora_unet_img_in.lora_down.weight"] = R(g, 2, 16),
            ["lora_unet_img_in.lora_up.weight"] = R(g, D, 2),
            ["lora_unet_img_in.alpha"] = tensor(2.0f),
        });
        var bfl = up.to(ScalarType.Float64).matmul(down.to(ScalarType.Float64)); // [shift; scale]
        var expected = cat([bfl.narrow(0, D, D), bfl.narrow(0, 0, D)], 0);   // diffusers [scale; shift]
        AssertClose(expected, DeltaW(adapter, "norm_out.linear"));
        Assert.Contains(adapter.Modules, m => m.Target == "x_embedder");
    }

    [Fact]
    public void KohyaWithDiffusersModuleNames()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var g = new Generator(12);
        var down = R(g, 2, D); var up = R(g, D, 2);
        using var adapter = Load(dir, new()
        {
            ["lora_transformer_single_transformer_blocks_1_attn_to_v.lora_down.weight"] = down,
            ["lora_transformer_single_transformer_blocks_1_attn_to_v.lora_up.weight"] = up,
            ["lora_transformer_single_transformer_blocks_1_attn_to_v.alpha"] = tensor(1f),
        });
        AssertClose(up.to(ScalarType.Float64).matmul(down.to(ScalarType.Float64)) * 0.5, DeltaW(adapter, "single_transformer_blocks.1.attn.to_v"));
    }

    [Fact]
    public void XLabsLayout()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var g = new Generator(6);
        var qd = R(g, 4, D); var qu = R(g, 3 * D, 4);
        var pd = R(g, 4, D + Mlp); var pu = R(g, D, 4);
        using var adapter = Load(dir, new()
        {
            ["double_blocks.0.processor.qkv_lora1.down.weight"] = qd,
            ["double_blocks.0.processor.qkv_lora1.up.weight"] = qu,
            ["double_blocks.0.processor.proj_lora2.down.weight"] = R(g, 4, D),
            ["double_blocks.0.processor.proj_lora2.up.weight"] = R(g, D, 4),
            ["single_blocks.1.processor.qkv_lora.down.weight"] = R(g, 4, D),
            ["single_blocks.1.processor.qkv_lora.up.weight"] = R(g, 3 * D, 4),
            ["single_blocks.1.processor.proj_lora.down.weight"] = pd,
            ["single_blocks.1.processor.proj_lora.up.weight"] = pu,
        });
        Assert.Equal(new HashSet<LoraFormat> { LoraFormat.XLabs }, adapter.Formats);
        var q = qu.to(ScalarType.Float64).matmul(qd.to(ScalarType.Float64));
        AssertClose(q.narrow(0, 2 * D, D), DeltaW(adapter, "transformer_blocks.0.attn.to_v"));
        Assert.Contains(adapter.Modules, m => m.Target == "transformer_blocks.0.attn.to_add_out");
        Assert.Contains(adapter.Modules, m => m.Target == "single_transformer_blocks.1.attn.to_k");
        Assert.DoesNotContain(adapter.Modules, m => m.Target == "single_transformer_blocks.1.proj_mlp");
        AssertClose(pu.to(ScalarType.Float64).matmul(pd.to(ScalarType.Float64)), DeltaW(adapter, "single_transformer_blocks.1.proj_out"));
    }

    [Fact]
    public void PeftInBflNaming()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var g = new Generator(7);
        var a = R(g, 4, D); var b = R(g, 3 * D, 4);
        using var adapter = Load(dir, new()
        {
            ["diffusion_model.double_blocks.1.img_attn.qkv.lora_A.weight"] = a,
            ["diffusion_model.double_blocks.1.img_attn.qkv.lora_B.weight"] = b,
            ["diffusion_model.double_blocks.1.img_attn.qkv.alpha"] = tensor(2.0f),
            ["diffusion_model.single_blocks.0.modulation.lin.lora_A.weight"] = R(g, 4, D),
            ["diffusion_model.single_blocks.0.modulation.lin.lora_B.weight"] = R(g, 3 * D, 4),
        });
        Assert.Equal(new HashSet<LoraFormat> { LoraFormat.BflPeft }, adapter.Formats);
        var w = b.to(ScalarType.Float64).matmul(a.to(ScalarType.Float64)) * 0.5;
        AssertClose(w.narrow(0, D, D), DeltaW(adapter, "transformer_blocks.1.attn.to_k"));
        Assert.Equal(1.0, adapter.Modules.Single(m => m.Target == "single_transformer_blocks.0.norm.linear").Scale);
    }

    [Fact]
    public void TextEncoderKeysAreReportedNotDropped()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var g = new Generator(8);
        using var adapter = Load(dir, new()
        {
            ["lora_unet_double_blocks_0_img_mlp_0.lora_down.weight"] = R(g, 2, D),
            ["lora_unet_double_blocks_0_img_mlp_0.lora_up.weight"] = R(g, Mlp, 2),
            ["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = R(g, 2, 8),
            ["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = R(g, 8, 2),
            ["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha"] = tensor(1.0f),
        });
        Assert.Single(adapter.Modules);
        Assert.Equal(3, adapter.UnsupportedKeys.Count);
        Assert.All(adapter.UnsupportedKeys, k => Assert.StartsWith("lora_te1_", k));
        Assert.Contains("not applied", Assert.Single(adapter.Warnings));
    }

    [Fact]
    public void TextEncoderKeysAreAppliedWhenATextEncoderIsGiven()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var g = new Generator(9);
        var te = new LoraTargetShapes(new Dictionary<string, LinearShape> { ["text_model.encoder.layers.0.self_attn.q_proj"] = new(8, 8) });
        var path = dir.File("te.safetensors");
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor>
        {
            ["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = R(g, 2, 8),
            ["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = R(g, 8, 2),
            ["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha"] = tensor(1.0f),
            ["text_encoder_2.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight"] = R(g, 2, 8),
            ["text_encoder_2.encoder.block.0.layer.0.SelfAttention.q.lora_B.weight"] = R(g, 8, 2),
        });
        using var adapter = LoraLoader.Load(path, new LoraModelTargets(new LoraTargetShapes(Shapes), te), ScalarType.Float32, CPU);
        var m = Assert.Single(adapter.Modules);
        Assert.Equal(LoraComponent.TextEncoder, m.Component);
        Assert.Equal(2, adapter.UnsupportedKeys.Count); // the T5 keys
    }

    [Fact]
    public void GoldenStyleFilesConvertAgainstTheTinyModel()
    {
        using var scope = NewDisposeScope();
        var shapes = FluxLinearShapes.FromCheckpoint(Path.Combine(GoldenRoot.Path, "models/tiny-flux/transformer/diffusion_pytorch_model.safetensors"));
        var targets = new LoraModelTargets(shapes);
        using var peft = LoraLoader.Load(Path.Combine(GoldenRoot.Path, "loras/style-peft.safetensors"), targets, ScalarType.Float32, CPU);
        Assert.Equal(44, peft.Modules.Count);
        Assert.All(peft.Modules, m => Assert.Equal(1.5, m.Scale)); // alpha 6 / rank 4
        using var kohya = LoraLoader.Load(Path.Combine(GoldenRoot.Path, "loras/style-kohya.safetensors"), targets, ScalarType.Float32, CPU);
        Assert.Equal(40, kohya.Modules.Count); // 2 x (3 + 3 + 8) double + 2 x (4 + 2) single
        Assert.Equal(128, kohya.Modules.Single(m => m.Target == "single_transformer_blocks.1.proj_mlp").B.shape[0]);
    }
}
