using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.Tests.Flux;
using OmniConsistency.Inference.TextEncoders;
using TorchSharp;
using Xunit;
using static OmniConsistency.Inference.Tests.TensorAssert;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Lora;

/// <summary>Text-encoder keys of a style LoRA (kohya <c>lora_te1_*</c>, diffusers <c>text_encoder.*</c>) act on CLIP.</summary>
public class TextEncoderLoraTests
{
    private static ClipTextModel RandomClip()
    {
        var clip = new ClipTextModel(new ClipTextConfig
        {
            VocabSize = 64, HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 2, NumAttentionHeads = 2, MaxPositionEmbeddings = 8, EosTokenId = 2,
        }, ParameterFactory.Cpu());
        var g = new Generator(3);
        using var grad = no_grad();
        foreach (var (name, p) in clip.named_parameters())
        {
            using var scope = NewDisposeScope();
            p.copy_(name.Contains("layer_norm", StringComparison.Ordinal) && name.EndsWith(".weight", StringComparison.Ordinal)
                ? ones(p.shape) : randn(p.shape, generator: g) * 0.2);
        }
        return clip;
    }

    [Fact]
    public void ClipKeysChangeTheClipOutputRunTimeAndMergedAndDetachRestoresIt()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        using var clip = RandomClip();
        using var flux = FluxTestModels.Random(FluxTestModels.TinyH, seed: 2);
        var clipTargets = new LoraTargetModules(clip);
        var fluxTargets = new LoraTargetModules(flux);
        var g = new Generator(4);
        var path = dir.File("te.safetensors");
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor>
        {
            ["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = randn([2, 16], generator: g),
            ["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = randn([16, 2], generator: g),
            ["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha"] = tensor(1.0f),
            ["text_encoder.text_model.encoder.layers.1.mlp.fc1.lora_A.weight"] = randn([2, 16], generator: g),
            ["text_encoder.text_model.encoder.layers.1.mlp.fc1.lora_B.weight"] = randn([32, 2], generator: g),
        });
        using var adapter = LoraLoader.Load(path, new LoraModelTargets(fluxTargets.Shapes, clipTargets.Shapes), ScalarType.Float32, CPU);
        Assert.Equal(2, adapter.Modules.Count);
        Assert.All(adapter.Modules, m => Assert.Equal(LoraComponent.TextEncoder, m.Component));
        Assert.Empty(adapter.UnsupportedKeys);

        var ids = tensor(new long[] { 5, 9, 17, 2, 0, 0 }).reshape(1, 6);
        Tensor Pooled() { using var output = clip.forward(ids); return output.PooledOutput.clone(); }
        var before = Pooled();
        var set = new LoraAdapterSet().Add(adapter, 0.9);
        Tensor runTime;
        using (set.Attach(fluxTargets, clipTargets)) runTime = Pooled();
        Assert.True((runTime - before).abs().max().item<float>() > 1e-3, "the CLIP LoRA did not change the pooled output");
        Assert.True(TensorsEqual(before, Pooled()));
        Tensor merged;
        using (set.Merge(fluxTargets, clipTargets)) merged = Pooled();
        Assert.True((merged - runTime).abs().max().item<float>() < 1e-5);
        Assert.True(TensorsEqual(before, Pooled()));

        // Without CLIP targets the adapter cannot be applied silently to the transformer alone.
        Assert.Throws<InvalidOperationException>(() => set.Attach(fluxTargets));
    }
}
