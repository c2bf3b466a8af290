using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Tests.Golden;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Lora;

/// <summary>Files that cannot be used are rejected with a typed exception naming every offending key.</summary>
public class LoraMalformedFileTests
{
    private static readonly LoraModelTargets Targets = new(new LoraTargetShapes(FluxLinearShapes.For(8, 1, 1, inChannels: 16, joint: 8, pooled: 8)));

    private static LoraFormatException Reject(TempFolder dir, Dictionary<string, Tensor> tensors, bool visibleInHeader = true)
    {
        var path = dir.File("bad.safetensors");
        SafetensorsWriter.Save(path, tensors);
        var e = Assert.Throws<LoraFormatException>(() => LoraLoader.Load(path, Targets, ScalarType.Float32, CPU));
        // Inspect (header only) agrees with Load.
        if (visibleInHeader) Assert.Throws<LoraFormatException>(() => LoraLoader.Inspect(path, Targets));
        return e;
    }

    [Fact]
    public void KeysMatchingNoModuleAreListed()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var e = Reject(dir, new()
        {
            ["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"] = ones(2, 8),
            ["transformer.transformer_blocks.0.attn.to_q.lora_B.weight"] = ones(8, 2),
            ["transformer.transformer_blocks.7.attn.to_q.lora_A.weight"] = ones(2, 8),   // no block 7
            ["transformer.transformer_blocks.7.attn.to_q.lora_B.weight"] = ones(8, 2),
            ["lora_unet_double_blocks_0_img_attn_qkvx.lora_down.weight"] = ones(2, 8),   // misspelled
            ["lora_unet_double_blocks_0_img_attn_qkvx.lora_up.weight"] = ones(24, 2),
            ["unet.down_blocks.0.attentions.0.proj_in.lora_A.weight"] = ones(2, 8),      // an SD LoRA
            ["unet.down_blocks.0.attentions.0.proj_in.lora_B.weight"] = ones(8, 2),
        });
        Assert.Equal(6, e.OffendingKeys.Count);
        Assert.Contains(e.OffendingKeys, k => k.StartsWith("transformer.transformer_blocks.7.attn.to_q.lora_A.weight: matches no module", StringComparison.Ordinal));
        Assert.Contains(e.OffendingKeys, k => k.StartsWith("lora_unet_double_blocks_0_img_attn_qkvx.lora_up.weight", StringComparison.Ordinal));
        Assert.Contains("unet.down_blocks.0.attentions.0.proj_in.lora_B.weight", e.Message);
    }

    [Fact]
    public void ShapesThatDoNotFitTheModelAreListed()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var e = Reject(dir, new()
        {
            // a LoRA for a model with inner dim 12, not 8
            ["transformer.x_embedder.lora_A.weight"] = ones(2, 16),
            ["transformer.x_embedder.lora_B.weight"] = ones(12, 2),
            ["transformer.transformer_blocks.0.attn.to_k.lora_A.weight"] = ones(2, 12),
            ["transformer.transformer_blocks.0.attn.to_k.lora_B.weight"] = ones(8, 2),
            // ranks of A and B disagree
            ["transformer.proj_out.lora_A.weight"] = ones(2, 8),
            ["transformer.proj_out.lora_B.weight"] = ones(16, 3),
            // fused qkv of the wrong total size
            ["lora_unet_double_blocks_0_txt_attn_qkv.lora_down.weight"] = ones(2, 8),
            ["lora_unet_double_blocks_0_txt_attn_qkv.lora_up.weight"] = ones(36, 2),
            ["lora_unet_double_blocks_0_txt_attn_qkv.alpha"] = tensor(2f),
        });
        Assert.Equal(4, e.OffendingKeys.Count);
        Assert.Contains(e.OffendingKeys, k => k.Contains("x_embedder.lora_B.weight: output size 12", StringComparison.Ordinal));
        Assert.Contains(e.OffendingKeys, k => k.Contains("to_k.lora_A.weight: input size 12", StringComparison.Ordinal));
        Assert.Contains(e.OffendingKeys, k => k.Contains("proj_out.lora_B.weight: rank 3", StringComparison.Ordinal));
        Assert.Contains(e.OffendingKeys, k => k.Contains("txt_attn_qkv.lora_up.weight: output size 36", StringComparison.Ordinal) && k.Contains("8/8/8", StringComparison.Ordinal));
    }

    [Fact]
    public void WrongKeyNamesAndUnpairedTensorsAreListed()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var e = Reject(dir, new()
        {
            ["transformer.proj_out.weight"] = ones(16, 8),                                  // a base weight, not a LoRA
            ["transformer.context_embedder.lora_A.weight"] = ones(2, 8),                     // no B
            ["transformer.transformer_blocks.0.ff.net.2.lora_B.weight"] = ones(8, 2),       // no A
            ["transformer.transformer_blocks.0.ff.net.2.dora_scale"] = ones(8),            // DoRA
        });
        Assert.Equal(4, e.OffendingKeys.Count);
        Assert.Contains(e.OffendingKeys, k => k.StartsWith("transformer.proj_out.weight: not a LoRA tensor name", StringComparison.Ordinal));
        Assert.Contains(e.OffendingKeys, k => k.Contains("no matching up / lora_B", StringComparison.Ordinal));
        Assert.Contains(e.OffendingKeys, k => k.Contains("no matching down / lora_A", StringComparison.Ordinal));
        Assert.Contains(e.OffendingKeys, k => k.Contains("DoRA", StringComparison.Ordinal));
    }

    [Fact]
    public void TruncatedFileIsRejected()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var path = dir.File("truncated.safetensors");
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor>
        {
            ["transformer.proj_out.lora_A.weight"] = ones(2, 8),
            ["transformer.proj_out.lora_B.weight"] = ones(16, 2),
        });
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^20]);
        var e = Assert.Throws<LoraFormatException>(() => LoraLoader.Load(path, Targets, ScalarType.Float32, CPU));
        Assert.Contains("truncated", e.Message);
        File.WriteAllBytes(path, bytes[..5]);
        Assert.Throws<LoraFormatException>(() => LoraLoader.Load(path, Targets, ScalarType.Float32, CPU));
        File.WriteAllText(path, "not a safetensors file at all");
        Assert.Throws<LoraFormatException>(() => LoraLoader.Load(path, Targets, ScalarType.Float32, CPU));
        Assert.Throws<LoraFormatException>(() => LoraLoader.Load(dir.File("missing.safetensors"), Targets, ScalarType.Float32, CPU));
    }

    [Fact]
    public void FilesWithNothingApplicableAreRejected()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var empty = Reject(dir, new() { ["__x"] = ones(1) });
        Assert.Contains("not a LoRA tensor name", empty.OffendingKeys[0]);
        var teOnly = Reject(dir, new()
        {
            ["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = ones(2, 8),
            ["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] = ones(8, 2),
        });
        Assert.Contains("only text-encoder keys", teOnly.Message);
    }

    [Fact]
    public void NonFiniteValuesAndBadAlphasAreRejected()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var a = ones(2, 8);
        a[0, 0] = tensor(float.NaN);
        Reject(dir, new() { ["transformer.proj_out.lora_A.weight"] = a, ["transformer.proj_out.lora_B.weight"] = ones(16, 2) }, visibleInHeader: false);
        var e = Reject(dir, new()
        {
            ["transformer.proj_out.lora_A.weight"] = ones(2, 8),
            ["transformer.proj_out.lora_B.weight"] = ones(16, 2),
            ["transformer.proj_out.alpha"] = ones(3),
        });
        Assert.Contains("alpha must be a single number", e.OffendingKeys[0]);
    }

    [Fact]
    public void TheConsistencyLoraIsNotMistakenForAStyleLora()
    {
        // diffusers would take it for an XLabs file ("processor" in a key, Q23); here it matches no module.
        var shapes = FluxLinearShapes.FromCheckpoint(Path.Combine(GoldenRoot.Path, "models/tiny-flux/transformer/diffusion_pytorch_model.safetensors"));
        var e = Assert.Throws<LoraFormatException>(() => LoraLoader.Load(Path.Combine(GoldenRoot.Path, "loras/omniconsistency-tiny.safetensors"),
            new LoraModelTargets(shapes), ScalarType.Float32, CPU));
        Assert.Equal(28, e.OffendingKeys.Count);
    }
}
