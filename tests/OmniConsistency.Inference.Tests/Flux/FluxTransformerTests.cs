using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.Tests.Golden;
using TorchSharp;
using Xunit;
using static OmniConsistency.Inference.Tests.TensorAssert;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Flux;

public class FluxTransformerTests
{
    private static string TinyFlux => Path.Combine(GoldenRoot.Path, "models", "tiny-flux");
    private static string TinyFluxBfl => Path.Combine(GoldenRoot.Path, "models", "tiny-flux-bfl.safetensors");

    [Fact]
    public void ConfigTakesDiffusersDefaults()
    {
        var c = FluxTransformerConfig.Parse("""{"_class_name": "FluxTransformer2DModel", "in_channels": 16, "out_channels": null}""");
        Assert.Equal(16, c.OutChannels);
        Assert.Equal([16, 56, 56], c.AxesDimsRope);
        Assert.False(c.GuidanceEmbeds);
        Assert.Equal(3072, c.InnerDim);
        Assert.Equal(38, c.NumSingleLayers);
    }

    [Theory]
    [InlineData("""{"attention_head_dim": 16, "axes_dims_rope": [4, 4, 4]}""")]
    [InlineData("""{"attention_head_dim": 16, "axes_dims_rope": [5, 5, 6]}""")]
    [InlineData("""{"num_attention_heads": 0}""")]
    [InlineData("""{"num_layers": "two"}""")]
    public void ConfigRejectsInconsistentValues(string json) =>
        Assert.Throws<FluxConfigException>(() => FluxTransformerConfig.Parse(json));

    [Fact]
    public void BflSingleFileLoadsBitIdenticalToDiffusersFolder()
    {
        var config = FluxTransformerConfig.FromJsonFile(Path.Combine(TinyFlux, "transformer", "config.json"));
        using var diffusers = FluxTransformerLoader.FromDiffusersFolder(TinyFlux, ParameterFactory.Cpu());
        using var bfl = FluxTransformerLoader.FromSingleFile(TinyFluxBfl, config, ParameterFactory.Cpu());
        AssertSameWeights(diffusers, bfl);
    }

    [Fact]
    public void ComfyPrefixedBflFileWithOtherComponentsLoads()
    {
        var config = FluxTransformerConfig.FromJsonFile(Path.Combine(TinyFlux, "transformer", "config.json"));
        var path = Path.Combine(FluxTestModels.TempDir(), "comfy.safetensors");
        using (var src = SafetensorsFile.Open(TinyFluxBfl))
        {
            var tensors = src.Keys.ToDictionary(k => BflFluxCheckpointLayout.ComfyPrefix + k, k => src.Load(k));
            tensors["first_stage_model.decoder.conv_in.weight"] = ones(2, 2);
            SafetensorsWriter.Save(path, tensors);
        }
        using var diffusers = FluxTransformerLoader.FromDiffusersFolder(TinyFlux, ParameterFactory.Cpu());
        using var comfy = FluxTransformerLoader.FromSingleFile(path, config, ParameterFactory.Cpu());
        AssertSameWeights(diffusers, comfy);
    }

    [Fact]
    public void OtherSizesRoundTripThroughBothLayouts()
    {
        var config = FluxTestModels.TinyH;
        using var model = FluxTestModels.Random(config, seed: 3);
        var dir = FluxTestModels.WriteDiffusersFolder(model, FluxTestModels.TempDir());
        var bflPath = Path.Combine(dir, "..", Path.GetFileName(dir) + "-bfl.safetensors");
        SafetensorsWriter.Save(bflPath, FluxTestModels.ToBflLayout(FluxTestModels.StateDict(model), config));

        using var fromFolder = FluxTransformerLoader.FromDiffusersFolder(dir, ParameterFactory.Cpu());
        using var fromBfl = FluxTransformerLoader.FromSingleFile(bflPath, config, ParameterFactory.Cpu());
        Assert.Equal(config, fromFolder.Config);
        AssertSameWeights(model, fromFolder);
        AssertSameWeights(model, fromBfl);

        using var scope = NewDisposeScope();
        var inputs = FluxTestModels.Inputs(config, batch: 2, textLength: 5, rows: 3, cols: 4, seed: 9);
        var a = model.Forward(inputs);
        var b = fromBfl.Forward(inputs);
        Assert.Equal([2, 12, 64], a.shape);
        Assert.True(TensorsEqual(a, b));
    }

    [Fact]
    public void StrictLoadReportsMissingUnexpectedAndMisShapedTogether()
    {
        using var model = FluxTestModels.Random(FluxTestModels.TinyH, seed: 4);
        var dir = FluxTestModels.WriteDiffusersFolder(model, FluxTestModels.TempDir());
        var weights = FluxTestModels.StateDict(model);
        weights.Remove("transformer_blocks.1.attn.to_k.bias");
        weights["transformer_blocks.1.attn.extra.weight"] = ones(3);
        weights["proj_out.weight"] = ones(64, 47);
        SafetensorsWriter.Save(Path.Combine(dir, "diffusion_pytorch_model.safetensors"), weights);

        var e = Assert.Throws<CheckpointMismatchException>(() => FluxTransformerLoader.FromDiffusersFolder(dir, ParameterFactory.Cpu()));
        Assert.Equal(["transformer_blocks.1.attn.to_k.bias"], e.Missing);
        Assert.Equal(["transformer_blocks.1.attn.extra.weight"], e.Unexpected);
        Assert.Single(e.MisShaped, s => s.StartsWith("proj_out.weight", StringComparison.Ordinal));
    }

    [Fact]
    public void BflFileWithWrongFusedRowsOrStrayKeysIsRejected()
    {
        var config = FluxTestModels.TinyH;
        using var model = FluxTestModels.Random(config, seed: 5);
        var bfl = FluxTestModels.ToBflLayout(FluxTestModels.StateDict(model), config);
        bfl["single_blocks.0.linear1.weight"] = bfl["single_blocks.0.linear1.weight"].narrow(0, 0, 3 * 48);
        var path = Path.Combine(FluxTestModels.TempDir(), "bad.safetensors");
        SafetensorsWriter.Save(path, bfl);
        var e = Assert.Throws<CheckpointMismatchException>(() => FluxTransformerLoader.FromSingleFile(path, config, ParameterFactory.Cpu()));
        Assert.Contains(e.MisShaped, s => s.Contains("single_blocks.0.linear1.weight") && s.Contains("336"));

        bfl = FluxTestModels.ToBflLayout(FluxTestModels.StateDict(model), config);
        bfl["double_blocks.9.img_mod.lin.weight"] = ones(2);
        bfl.Remove("guidance_in.in_layer.bias");
        SafetensorsWriter.Save(path, bfl);
        e = Assert.Throws<CheckpointMismatchException>(() => FluxTransformerLoader.FromSingleFile(path, config, ParameterFactory.Cpu()));
        Assert.Equal(["time_text_embed.guidance_embedder.linear_1.bias"], e.Missing);
        Assert.Contains("double_blocks.9.img_mod.lin.weight", e.Unexpected);
    }

    [Fact]
    public void ModelWithoutGuidanceEmbedsHasNoGuidanceEmbedder()
    {
        var config = FluxTestModels.TinyH with { GuidanceEmbeds = false };
        using var model = FluxTestModels.Random(config, seed: 6);
        Assert.DoesNotContain(model.named_parameters(), p => p.name.Contains("guidance_embedder"));
        using var scope = NewDisposeScope();
        var inputs = FluxTestModels.Inputs(config, 1, 4, 2, 2, seed: 1, guidance: false);
        Assert.Equal([1, 4, 64], model.Forward(inputs).shape);
        Assert.Throws<ArgumentException>(() => model.Forward(inputs with { Guidance = ones(1) }));
    }

    [Fact]
    public void GuidanceModelRequiresGuidanceAndConsistentIds()
    {
        using var model = FluxTestModels.Random(FluxTestModels.TinyH, seed: 7);
        using var scope = NewDisposeScope();
        var inputs = FluxTestModels.Inputs(FluxTestModels.TinyH, 1, 4, 2, 2, seed: 1);
        Assert.Throws<ArgumentException>(() => model.Forward(inputs with { Guidance = null }));
        Assert.Throws<ArgumentException>(() => model.Forward(inputs with { ImageIds = zeros(5, 3) }));
        Assert.Throws<ArgumentException>(() => model.Forward(inputs with { TextIds = zeros(4, 2) }));
        Assert.Throws<ArgumentException>(() => model.Forward(inputs with { HiddenStates = zeros(1, 4, 32) }));
    }

    [Fact]
    public void Bf16ForwardStaysCloseToFp32()
    {
        var config = FluxTestModels.TinyH;
        using var fp32 = FluxTestModels.Random(config, seed: 8);
        using var bf16 = new FluxTransformer2DModel(config, new ParameterFactory(ScalarType.BFloat16, CPU));
        ModuleWeightLoader.Load(bf16, new DictionarySource(FluxTestModels.StateDict(fp32)));
        using var scope = NewDisposeScope();
        var inputs = FluxTestModels.Inputs(config, 2, 6, 4, 3, seed: 2);
        var a = fp32.Forward(inputs);
        var b = bf16.Forward(inputs);
        Assert.Equal(ScalarType.BFloat16, b.dtype);
        double err = (a - b.to(ScalarType.Float32)).abs().max().item<float>();
        double scale = a.abs().max().item<float>();
        Assert.True(err < 0.05 * scale, $"bf16 differs from fp32 by {err} (max |out| {scale})");
    }

    [Fact]
    public void ForwardLeavesNoLiveTensorsAndWeightsOutliveTheBuildScope()
    {
        FluxTransformer2DModel model;
        using (NewDisposeScope()) model = FluxTestModels.Random(FluxTestModels.TinyH, seed: 10);
        using var _ = model;
        var inputs = FluxTestModels.Inputs(FluxTestModels.TinyH, 2, 5, 3, 3, seed: 3);
        using (NewDisposeScope()) model.Forward(inputs);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        using (var capture = new TensorCapture())
        using (NewDisposeScope())
        {
            model.Forward(inputs, new FluxForwardContext { Capture = capture.Sink });
            Assert.Contains("single_transformer_blocks.0.hidden_states", capture.Tensors.Keys);
        }
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void TextRopeIsIdentityAndTablesUseAdjacentPairs()
    {
        using var scope = NewDisposeScope();
        var ids = cat([zeros(2, 3), tensor(new float[] { 0, 3, 5 }).unsqueeze(0)], 0);
        var table = FluxRotaryEmbedding.Table(ids, [4, 6, 6], 10000);
        Assert.True(table.Cos[..2].eq(1).all().item<bool>());
        Assert.True(table.Sin[..2].eq(0).all().item<bool>());
        // Row axis (channels 4..9) at position 3: ω_k = 10000^(−2k/6); values repeat in pairs.
        Assert.Equal(Math.Cos(3 * Math.Pow(10000, -2.0 / 6)), table.Cos[2, 6].item<float>(), 6);
        Assert.Equal(table.Cos[2, 6].item<float>(), table.Cos[2, 7].item<float>());
        var x = arange(16, dtype: ScalarType.Float32).reshape(1, 1, 1, 16).expand(1, 1, 3, 16);
        var rotated = FluxRotaryEmbedding.Apply(x, table);
        // out[1] = x1·cos + x0·sin for the col axis pair (channels 10, 11) of row 2.
        double c = table.Cos[2, 10].item<float>(), s = table.Sin[2, 10].item<float>();
        Assert.Equal(11 * c + 10 * s, rotated[0, 0, 2, 11].item<float>(), 4);
        Assert.Equal(10 * c - 11 * s, rotated[0, 0, 2, 10].item<float>(), 4);
    }

    internal static void AssertSameWeights(FluxTransformer2DModel expected, FluxTransformer2DModel actual)
    {
        var a = FluxTestModels.StateDict(expected);
        var b = FluxTestModels.StateDict(actual);
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var (name, t) in a)
            Assert.True(TensorsEqual(t, b[name]), $"{name} differs");
    }
}

/// <summary>Named in-memory tensors as a tensor source.</summary>
internal sealed class DictionarySource(IReadOnlyDictionary<string, Tensor> tensors) : ITensorSource
{
    public string Description => "in-memory tensors";
    public IReadOnlyCollection<string> Keys => tensors.Keys.ToList();
    public long[] Shape(string key) => tensors[key].shape;
    public Tensor Load(string key, ScalarType dtype, Device device) => tensors[key].to(dtype, device);
}
