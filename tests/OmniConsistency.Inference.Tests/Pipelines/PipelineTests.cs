using OmniConsistency.Inference.Imaging;
using OmniConsistency.Inference.Pipelines;
using OmniConsistency.Inference.Tests.Golden;
using TorchSharp;
using Xunit;
using static OmniConsistency.Inference.Tests.TensorAssert;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Pipelines;

public class PipelineTests
{
    private static string TinyFlux => Path.Combine(GoldenRoot.Path, "models", "tiny-flux");
    private static string TinyLora => Path.Combine(GoldenRoot.Path, "loras", "omniconsistency-tiny.safetensors");
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static FluxModelSet TinyModels() =>
        FluxModelSet.Load(new FluxModelSetOptions { ModelFolder = TinyFlux, ConsistencyLoraFile = TinyLora, Device = "cpu" });

    [Theory]
    [InlineData("pipeline_b1_4steps")]
    [InlineData("pipeline_b1_style_peft")]
    public void ASeedReproducesTheReferencePipelinesNoise(string caseName)
    {
        using var c = new GoldenCase(GoldenRoot.Path, caseName);
        using var scope = NewDisposeScope();
        var expected = c.Input("noise");
        using var noise = GenerationNoise.FromSeed(c.Params.GetProperty("noise_seed").GetInt64());
        var drawn = noise.InitialNoise(expected.shape, ScalarType.Float32, CPU);
        Assert.True(TensorsEqual(drawn, expected));

        // The condition ε is the second draw of the same generator; it cannot come first.
        using var g = new Generator((ulong)c.Params.GetProperty("noise_seed").GetInt64());
        randn(expected.shape, generator: g);
        Assert.True(TensorsEqual(noise.ConditionEps([1, 16, 4, 4], ScalarType.Float32, CPU), randn([1, 16, 4, 4], generator: g)));
        using var fresh = GenerationNoise.FromSeed(1);
        Assert.Throws<InvalidOperationException>(() => fresh.ConditionEps([1, 16, 4, 4], ScalarType.Float32, CPU));
    }

    [Fact]
    public void BflSingleFilesGiveTheSameGenerationAsTheDiffusersFolder()
    {
        using var c = new GoldenCase(GoldenRoot.Path, "pipeline_e2e");
        using var scope = NewDisposeScope();
        var produced = PipelineE2EKind.Run(c, new FluxModelSetOptions
        {
            TransformerFile = Path.Combine(GoldenRoot.Path, "models", "tiny-flux-bfl.safetensors"),
            TransformerConfigFile = Path.Combine(TinyFlux, "transformer", "config.json"),
            VaeFile = Path.Combine(TinyFlux, "vae", "diffusion_pytorch_model.safetensors"),
            VaeConfigFile = Path.Combine(TinyFlux, "vae", "config.json"),
            TextEncodersFolder = TinyFlux,
            Device = "cpu",
        });
        c.AssertMatches(produced);
    }

    [Fact]
    public void MissingModelPartsAreListedTogether()
    {
        var e = Assert.Throws<ModelSetConfigurationException>(() => FluxModelSet.Load(new FluxModelSetOptions
        {
            TransformerFile = "/nonexistent/flux1-dev.safetensors",
            ConsistencyLoraFile = "/nonexistent/OmniConsistency.safetensors",
        }));
        Assert.Contains(e.Problems, p => p.Contains("transformer file", StringComparison.Ordinal));
        Assert.Contains(e.Problems, p => p.Contains("no VAE", StringComparison.Ordinal));
        Assert.Contains(e.Problems, p => p.Contains("no text encoders", StringComparison.Ordinal));
        Assert.Contains(e.Problems, p => p.Contains("consistency LoRA", StringComparison.Ordinal));
    }

    [Fact]
    public void SingleFileTransformerDefaultsToTheFlux1DevConfig()
    {
        var config = new FluxModelSetOptions().SingleFileTransformerConfig();
        Assert.Equal((19, 38, 3072, 4096, 768, true), (config.NumLayers, config.NumSingleLayers, config.InnerDim, config.JointAttentionDim, config.PooledProjectionDim, config.GuidanceEmbeds));
        Assert.Equal([16, 56, 56], config.AxesDimsRope);
    }

    [Fact]
    public void AGenerationCancelledOnItsThreadLeavesNoLiveTensors()
    {
        using var models = TinyModels();
        var options = new StylizationEngineOptions();
        var pipeline = new StylizationPipeline(models, options, catalog: null, cache: null);
        var request = BuiltInEngineFixture.SmallRequest() with { Steps = 4 };
        var plan = pipeline.Plan(request);
        var reference = pipeline.Generate(plan, request.Image, [], null, Ct);

        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        using var cts = new CancellationTokenSource();
        Assert.Throws<OperationCanceledException>(() => pipeline.Generate(plan, request.Image, [],
            new InlineProgress(p => { if (p.Phase == GenerationPhases.Denoising && p.Step == 1) cts.Cancel(); }), cts.Token));
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        Assert.Equal(0, pipeline.LastGenerationLiveTensorDelta);

        var again = pipeline.Generate(plan, request.Image, [], null, Ct);
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        Assert.Equal(reference.Image, again.Image);
    }

    [Fact]
    public void PlainTextToImageIsSeededReportsEveryStepAndCancels()
    {
        using var models = TinyModels();
        var pipeline = new FluxTextToImagePipeline(models);
        var inputs = new FluxGenerationInputs { Prompt = "a cat", Height = 48, Width = 80, Steps = 3 };
        using var scope = NewDisposeScope();
        var steps = new List<int>();
        using var capture = new Inference.Flux.TensorCapture();
        Tensor Run(long seed, Action<StylizationProgress>? progress = null, CancellationToken ct = default, Action<string, Tensor>? sink = null)
        {
            using var noise = GenerationNoise.FromSeed(seed);
            using var output = pipeline.Run(inputs, noise, progress, ct, sink);
            return output.Image.clone();
        }
        var a = Run(1, p => { if (p.Phase == GenerationPhases.Denoising) steps.Add(p.Step); }, Ct, capture.Sink);
        Assert.Equal([1, 3, 48, 80], a.shape);
        Assert.Equal([0, 1, 2, 3], steps);
        Assert.True(TensorsEqual(Run(1, ct: Ct), a));
        Assert.False(TensorsEqual(Run(2, ct: Ct), a));
        // No condition branch: only the noise tokens' ids, no warm-up.
        Assert.Equal([15, 3], capture.Tensors["latent_image_ids"].shape);
        Assert.False(capture.Tensors.ContainsKey("transformer_out_warmup"));

        using var cts = new CancellationTokenSource();
        Assert.Throws<OperationCanceledException>(() => Run(1, p => { if (p.Step == 1) cts.Cancel(); }, cts.Token));
    }

    [Fact]
    public void ThePlainPipelineRunsOnCudaFromConfigurationLikeOnCpu()
    {
        // Device and dtype come from the options only; a CUDA build (TorchBackend=cuda) on a GPU runs this.
        if (!cuda.is_available()) Assert.Skip("no CUDA device visible to libtorch (the default TorchBackend=cpu build never has one; run a TorchBackend=cuda build on a GPU)");
        var inputs = new FluxGenerationInputs { Prompt = "a cat", Height = 48, Width = 64, Steps = 2 };
        Tensor Generate(string device, string dtype)
        {
            using var models = FluxModelSet.Load(new FluxModelSetOptions { ModelFolder = TinyFlux, ConsistencyLoraFile = TinyLora, Device = device, DType = dtype });
            Assert.Equal(device == "cpu" ? DeviceType.CPU : DeviceType.CUDA, models.Device.type);
            Assert.Equal(TorchRuntime.ParseDType(dtype), models.DType);
            using var noise = GenerationNoise.FromSeed(7);
            using var output = new FluxTextToImagePipeline(models).Run(inputs, noise, cancellationToken: Ct);
            return output.Image.to(ScalarType.Float32).cpu();
        }
        using var scope = NewDisposeScope();
        var onCpu = Generate("cpu", "float32");
        // fp32: the same numbers up to kernel differences (cuDNN may use TF32 for convolutions).
        var onCuda = Generate("cuda", "float32");
        double diff = (onCpu - onCuda).abs().max().item<float>();
        Assert.True(diff <= 1e-2, $"CUDA fp32 image differs from CPU fp32 by {diff}");
        // bf16: random tiny weights amplify bf16 rounding (CPU bf16 differs from fp32 by up to 0.78 too), so only
        // that it runs in bf16 on the GPU and yields a finite image in [0, 1].
        var bf16 = Generate("cuda", "bfloat16");
        Assert.Equal(onCpu.shape, bf16.shape);
        Assert.True(bf16.isfinite().all().item<bool>() && bf16.min().item<float>() >= 0 && bf16.max().item<float>() <= 1);
    }

    [Fact]
    public async Task ABf16ModelSetRunsAStylizationWithAStyleEndToEnd()
    {
        var data = Directory.CreateTempSubdirectory("bf16-engine-").FullName;
        try
        {
            using var engine = StylizationEngine.Create(new StylizationEngineOptions { DataDirectory = data, Device = "cpu", DType = "bfloat16" });
            Assert.Equal("bfloat16", engine.Info.DType);
            var request = BuiltInEngineFixture.SmallRequest() with { Steps = 2, Styles = [new StyleSelection(BuiltIn.BuiltInModel.DemoStyleName)] };
            var result = await engine.RunAsync(request, null, Ct);
            Assert.Equal((64, 48), new ImageCodec().Identify(result.Image));
            Assert.Equal(0, engine.LastGenerationLiveTensorDelta);
            Assert.Equal(1, engine.LoraCacheMetrics!.DiskLoads);
        }
        finally
        {
            Directory.Delete(data, true);
        }
    }

    [Fact]
    public void OptionsBindFromFlatConfigurationPairs()
    {
        var options = StylizationEngineOptions.FromConfiguration(new Dictionary<string, string?>
        {
            ["Engine"] = null,
            ["modelpath"] = "/models/FLUX.1-dev",
            ["ConsistencyLoraPath"] = "/models/OmniConsistency.safetensors",
            ["MaxSide"] = "1536",
            ["MaxGuidance"] = "12.5",
            ["TextFreeWarmup"] = "true",
            ["Threads"] = "",
            ["PreloadStyles:0"] = "ghibli",
            ["PreloadStyles:1"] = "chibi",
        });
        Assert.Equal("/models/FLUX.1-dev", options.ModelPath);
        Assert.Equal(1536, options.MaxSide);
        Assert.Equal(12.5, options.MaxGuidance);
        Assert.True(options.TextFreeWarmup);
        Assert.Null(options.Threads);
        Assert.Equal(["ghibli", "chibi"], options.PreloadStyles);
        Assert.False(options.UsesBuiltInModel);
        options.Validate();

        Assert.Equal(["a", "b"], StylizationEngineOptions.FromConfiguration([KeyValuePair.Create("PreloadStyles", (string?)"a, b")]).PreloadStyles);
        var e = Assert.Throws<ArgumentException>(() => StylizationEngineOptions.FromConfiguration(new Dictionary<string, string?>
        {
            ["ModelPth"] = "/models/x",
            ["MaxSide"] = "big",
        }));
        Assert.Contains("ModelPth", e.Message);
        Assert.Contains("MaxSide", e.Message);
        Assert.Throws<ArgumentException>(() => new StylizationEngineOptions { ModelPath = "/m" }.Validate());
        Assert.Throws<ArgumentException>(() => new StylizationEngineOptions { LoraApplication = "sometimes" }.Validate());
    }
}
