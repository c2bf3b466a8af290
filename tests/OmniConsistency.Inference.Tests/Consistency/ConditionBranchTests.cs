using OmniConsistency.Inference.Consistency;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.Sampling;
using OmniConsistency.Inference.Tests.Flux;
using OmniConsistency.Inference.Tests.Golden;
using TorchSharp;
using Xunit;
using static OmniConsistency.Inference.Tests.TensorAssert;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Consistency;

public class ConditionBranchTests
{
    private static string TinyFlux => Path.Combine(GoldenRoot.Path, "models", "tiny-flux");
    private static string TinyLora => Path.Combine(GoldenRoot.Path, "loras", "omniconsistency-tiny.safetensors");
    private static readonly FlowMatchEulerScheduler Scheduler = new(FlowMatchSchedulerConfig.FluxDev);
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static (FluxTransformer2DModel Model, ConsistencyLora Lora) Tiny()
    {
        var model = FluxTransformerLoader.FromDiffusersFolder(TinyFlux, ParameterFactory.Cpu());
        return (model, ConsistencyLora.Load(TinyLora, model.Config, model.Device));
    }

    /// <summary>A 64×96 request with a 32×32 condition (4×4 condition tokens, 4×6 noise tokens).</summary>
    private static ConditionedSamplingRequest Request(long seed, int steps = 3, long textLength = 5)
    {
        var g = new Generator((ulong)seed);
        return new ConditionedSamplingRequest
        {
            PromptEmbeds = randn([1, textLength, 32], generator: g),
            PooledPromptEmbeds = randn([1, 32], generator: g),
            ConditionLatents = randn([1, 16, 8, 8], generator: g),
            Noise = randn([1, 16, 8, 12], generator: g),
            Height = 64,
            Width = 96,
            Steps = steps,
        };
    }

    [Fact]
    public void ConsistencyLoraLoadsWithItsRankAndStoredDtype()
    {
        var (model, lora) = Tiny();
        using var _m = model;
        using var _l = lora;
        Assert.Equal(4, lora.Rank);
        Assert.Equal(ScalarType.Float32, lora.DType);
        Assert.Equal(4, lora.Layers.Count);
        Assert.NotNull(lora.Layers[1].Projection);
        Assert.Null(lora.Layers[2].Projection);
        Assert.Equal("single_transformer_blocks.1.attn.processor", lora.Layers[3].ProcessorName);

        var bf16Path = Path.Combine(FluxTestModels.TempDir(), "bf16.safetensors");
        using (var file = SafetensorsFile.Open(TinyLora))
            SafetensorsWriter.Save(bf16Path, file.Keys.ToDictionary(k => k, k => file.Load(k).to(ScalarType.BFloat16)));
        using var bf16 = ConsistencyLora.Load(bf16Path, model.Config, CPU);
        Assert.Equal(ScalarType.BFloat16, bf16.DType);
    }

    [Fact]
    public void ConsistencyLoraThatDoesNotFitIsRejectedWithEveryProblem()
    {
        using var model = FluxTestModels.Random(FluxTestModels.TinyH, seed: 1);
        var shapes = ConsistencyLora.ExpectedShapes(model.Config, rank: 3);
        var tensors = shapes.ToDictionary(kv => kv.Key, kv => randn(kv.Value));
        tensors.Remove("transformer_blocks.2.attn.processor.proj_loras.0.up.weight");
        tensors["transformer_blocks.7.attn.processor.q_loras.0.down.weight"] = randn(3, 48);
        tensors["single_transformer_blocks.0.attn.processor.k_loras.0.up.weight"] = randn(48, 2);
        tensors["single_transformer_blocks.0.attn.processor.v_loras.0.down.weight"] = randn(3, 32);
        var e = Assert.Throws<CheckpointMismatchException>(() => ConsistencyLora.Load(new DictionarySource(tensors), model.Config, CPU, ScalarType.Float32));
        Assert.Equal(["transformer_blocks.2.attn.processor.proj_loras.0.up.weight"], e.Missing);
        Assert.Equal(["transformer_blocks.7.attn.processor.q_loras.0.down.weight"], e.Unexpected);
        Assert.Equal(2, e.MisShaped.Count);
        Assert.Contains(e.MisShaped, m => m.StartsWith("single_transformer_blocks.0.attn.processor.k_loras.0.up.weight", StringComparison.Ordinal));
        Assert.Contains(e.MisShaped, m => m.StartsWith("single_transformer_blocks.0.attn.processor.v_loras.0.down.weight", StringComparison.Ordinal));
    }

    /// <summary>Upstream loads proj_loras and never applies them (Q8): a file whose proj_loras differ must give the same
    /// warm-up, bank and generation, while a change to a q/k/v LoRA must not.</summary>
    [Fact]
    public void ProjLorasAreLoadedButNotApplied()
    {
        using var model = FluxTransformerLoader.FromDiffusersFolder(TinyFlux, ParameterFactory.Cpu());
        using var scope = NewDisposeScope();
        Dictionary<string, Tensor> tensors;
        using (var file = SafetensorsFile.Open(TinyLora)) tensors = file.Keys.ToDictionary(k => k, k => file.Load(k));
        var g = new Generator(9);
        var proj = tensors.Keys.Where(k => k.Contains(".proj_loras.", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(proj);
        var otherProj = tensors.ToDictionary(kv => kv.Key, kv => proj.Contains(kv.Key) ? randn(kv.Value.shape, generator: g) : kv.Value);
        var otherQuery = tensors.ToDictionary(kv => kv.Key, kv => kv.Key.Contains(".q_loras.0.up.", StringComparison.Ordinal) ? randn(kv.Value.shape, generator: g) : kv.Value);
        using var lora = ConsistencyLora.Load(new DictionarySource(tensors), model.Config, CPU, ScalarType.Float32);
        using var loraOtherProj = ConsistencyLora.Load(new DictionarySource(otherProj), model.Config, CPU, ScalarType.Float32);
        using var loraOtherQuery = ConsistencyLora.Load(new DictionarySource(otherQuery), model.Config, CPU, ScalarType.Float32);
        Assert.False(TensorsEqual(lora.Layers[0].Projection!.Up, loraOtherProj.Layers[0].Projection!.Up));

        var request = Request(seed: 4, steps: 2);
        var expected = new FluxConditionedSampler(model, Scheduler, lora).Sample(request, cancellationToken: Ct);
        Assert.True(TensorsEqual(expected, new FluxConditionedSampler(model, Scheduler, loraOtherProj).Sample(request, cancellationToken: Ct)));
        Assert.False(TensorsEqual(expected, new FluxConditionedSampler(model, Scheduler, loraOtherQuery).Sample(request, cancellationToken: Ct)));
    }

    [Fact]
    public void BankIgnoresT5EmbeddingsButFollowsPooledEmbedding()
    {
        var (model, lora) = Tiny();
        using var _m = model;
        using var _l = lora;
        using var scope = NewDisposeScope();
        var g = new Generator(5);
        var inputs = new ConditionWarmupInputs(randn([1, 16, 64], generator: g), ConditionPositionIds.Create(8, 8, 12, 8, ScalarType.Float32),
            randn([1, 7, 32], generator: g), randn([1, 32], generator: g), full([1], 3.5f), zeros(7, 3));
        using var a = ConditionBranch.Warmup(model, lora, inputs).Bank;
        using var b = ConditionBranch.Warmup(model, lora, inputs with { EncoderHiddenStates = randn([1, 7, 32], generator: g) }).Bank;
        using var noText = ConditionBranch.Warmup(model, lora, inputs with { EncoderHiddenStates = zeros(1, 0, 32), TextIds = zeros(0, 3) }).Bank;
        using var otherPooled = ConditionBranch.Warmup(model, lora, inputs with { PooledProjections = randn([1, 32], generator: g) }).Bank;
        for (int layer = 0; layer < a.LayerCount; layer++)
        {
            Assert.True(TensorsEqual(a.Layer(layer).Key, b.Layer(layer).Key), $"layer {layer} keys depend on T5");
            Assert.True(TensorsEqual(a.Layer(layer).Value, b.Layer(layer).Value), $"layer {layer} values depend on T5");
            Assert.True((a.Layer(layer).Key - noText.Layer(layer).Key).abs().max().item<float>() < 1e-5, $"layer {layer}: text-free warm-up differs");
        }
        Assert.False(TensorsEqual(a.Layer(3).Value, otherPooled.Layer(3).Value));
    }

    [Fact]
    public async Task InterleavedGenerationsOnOneModelEachReproduceTheirOwnResult()
    {
        var (model, lora) = Tiny();
        using var _m = model;
        using var _l = lora;
        var sampler = new FluxConditionedSampler(model, Scheduler, lora);
        using var scope = NewDisposeScope();
        var requestA = Request(seed: 1);
        var requestB = Request(seed: 2) with { GuidanceScale = 2.0, ConsistencyWeight = 1.5 };
        var aloneA = sampler.Sample(requestA, cancellationToken: Ct);
        var aloneB = sampler.Sample(requestB, cancellationToken: Ct);
        Assert.False(TensorsEqual(aloneA, aloneB));

        // Step by step, alternating between the two generations, each with its own bank.
        var stepsA = Steps(model, lora, requestA);
        var stepsB = Steps(model, lora, requestB);
        Tensor? lastA = null, lastB = null;
        while (stepsA.MoveNext() | stepsB.MoveNext())
        {
            lastA = stepsA.Current ?? lastA;
            lastB = stepsB.Current ?? lastB;
        }
        Assert.True(TensorsEqual(aloneA, lastA!));
        Assert.True(TensorsEqual(aloneB, lastB!));

        // And concurrently on two threads.
        var tasks = new[] { requestA, requestB }.Select(r => Task.Run(() =>
        {
            using var threadScope = NewDisposeScope();
            return sampler.Sample(r, cancellationToken: Ct).DetachFromDisposeScope();
        }, Ct)).ToArray();
        var results = await Task.WhenAll(tasks);
        using var parallelA = results[0];
        using var parallelB = results[1];
        Assert.True(TensorsEqual(aloneA, parallelA));
        Assert.True(TensorsEqual(aloneB, parallelB));
    }

    /// <summary>The sampler's algorithm written out with the public pieces, yielding the latents after each step.</summary>
    private static IEnumerator<Tensor> Steps(FluxTransformer2DModel model, ConsistencyLora lora, ConditionedSamplingRequest r)
    {
        var latents = FluxLatents.Pack(r.Noise);
        var condition = FluxLatents.Pack(r.ConditionLatents!);
        var noiseIds = FluxLatents.ImageIds(8, 12, ScalarType.Float32);
        var condIds = ConditionPositionIds.Create(8, 8, 8, 12, ScalarType.Float32);
        var schedule = Scheduler.CreateSchedule(r.Steps, latents.shape[1]);
        var guidance = full([1], (float)r.GuidanceScale);
        var textIds = zeros(r.PromptEmbeds.shape[1], 3);
        var warmup = ConditionBranch.Warmup(model, lora,
            new ConditionWarmupInputs(condition, condIds, r.PromptEmbeds, r.PooledPromptEmbeds, guidance, textIds), r.ConsistencyWeight);
        using var bank = warmup.Bank;
        for (int i = 0; i < schedule.Steps; i++)
        {
            var t = full([1], schedule.Timesteps[i]) / 1000;
            var v = model.Forward(new FluxTransformerInputs(latents, r.PromptEmbeds, r.PooledPromptEmbeds, t, guidance, noiseIds, textIds),
                new FluxForwardContext { Attention = bank });
            latents = Scheduler.Step(schedule, i, v, latents);
            yield return latents;
        }
    }

    [Fact]
    public void TextFreeWarmupGivesTheSameGenerationWithinRounding()
    {
        var (model, lora) = Tiny();
        using var _m = model;
        using var _l = lora;
        var sampler = new FluxConditionedSampler(model, Scheduler, lora);
        using var scope = NewDisposeScope();
        var request = Request(seed: 7);
        var upstream = sampler.Sample(request, cancellationToken: Ct);
        var textFree = sampler.Sample(request with { TextFreeWarmup = true }, cancellationToken: Ct);
        Assert.True((upstream - textFree).abs().max().item<float>() < 1e-5);
    }

    [Fact]
    public void CancelledGenerationLeavesNoLiveTensors()
    {
        var (model, lora) = Tiny();
        using var _m = model;
        using var _l = lora;
        var sampler = new FluxConditionedSampler(model, Scheduler, lora);
        var request = Request(seed: 3, steps: 4);
        using (NewDisposeScope()) sampler.Sample(request with { Steps = 1 }, cancellationToken: Ct);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        using var cts = new CancellationTokenSource();
        int completed = 0;
        Assert.Throws<OperationCanceledException>(() =>
        {
            using var scope = NewDisposeScope();
            sampler.Sample(request, step => { completed = step; if (step == 2) cts.Cancel(); }, cts.Token);
        });
        Assert.Equal(2, completed);
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);

        // A failure mid-generation (here the model rejects the prompt width in the warm-up) cleans up too.
        Assert.Throws<ArgumentException>(() =>
        {
            using var scope = NewDisposeScope();
            sampler.Sample(request with { PromptEmbeds = randn(1, 5, 31) }, cancellationToken: Ct);
        });
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void OtherSizesAndBatchTwoRun()
    {
        var config = FluxTestModels.TinyH;
        using var model = FluxTestModels.Random(config, seed: 11);
        var g = new Generator(4);
        using var lora = ConsistencyLora.Load(new DictionarySource(ConsistencyLora.ExpectedShapes(config, 6).ToDictionary(kv => kv.Key, kv => randn(kv.Value, generator: g) * 0.1)),
            config, CPU, ScalarType.Float32);
        var sampler = new FluxConditionedSampler(model, Scheduler, lora);
        using var scope = NewDisposeScope();
        var request = new ConditionedSamplingRequest
        {
            PromptEmbeds = randn([2, 3, 24], generator: g),
            PooledPromptEmbeds = randn([2, 40], generator: g),
            ConditionLatents = randn([1, 16, 6, 6], generator: g),
            Noise = randn([2, 16, 10, 6], generator: g),
            Height = 80,
            Width = 48,
            Steps = 2,
        };
        var latents = sampler.Sample(request, cancellationToken: Ct);
        Assert.Equal([2, 15, 64], latents.shape);
        // Sample 1 of a batch equals the same sample run alone.
        var alone = sampler.Sample(request with
        {
            PromptEmbeds = request.PromptEmbeds[1..2], PooledPromptEmbeds = request.PooledPromptEmbeds[1..2], Noise = request.Noise[1..2],
        }, cancellationToken: Ct);
        Assert.True((latents[1..2] - alone).abs().max().item<float>() < 1e-5);
    }

    [Fact]
    public void ConditionIdsStretchOverTheOutputGridWithBf16Rounding()
    {
        using var scope = NewDisposeScope();
        var square = ConditionPositionIds.Create(64, 64, 128, 128, ScalarType.Float32);
        Assert.Equal([1024, 3], square.shape);
        Assert.Equal(2f * 5, square[5 * 32 + 7, 1].item<float>());
        Assert.Equal(2f * 7, square[5 * 32 + 7, 2].item<float>());
        Assert.True(square[.., 0].eq(0).all().item<bool>());

        // 1024×680 output with cond 512: column scale 84/64 = 1.3125; bf16 rounds 17.0625 → 17 and 40.6875 → 40.75.
        var cols = ConditionPositionIds.Create(64, 64, 128, 84, ScalarType.BFloat16)[..32, 2].to(ScalarType.Float32);
        Assert.Equal(1.3125f, cols[1].item<float>());
        Assert.Equal(17f, cols[13].item<float>());
        Assert.Equal(40.75f, cols[31].item<float>());
    }

    [Fact]
    public void PackAndUnpackAreInverse()
    {
        using var scope = NewDisposeScope();
        var z = randn(2, 16, 6, 10);
        var packed = FluxLatents.Pack(z);
        Assert.Equal([2, 15, 64], packed.shape);
        // Token (row 1, col 2), feature c·4 + dy·2 + dx.
        Assert.Equal(z[1, 3, 3, 4].item<float>(), packed[1, 1 * 5 + 2, 3 * 4 + 1 * 2 + 0].item<float>());
        Assert.True(TensorsEqual(z, FluxLatents.Unpack(packed, 6, 10)));
        var ids = FluxLatents.ImageIds(6, 10, ScalarType.Float32);
        Assert.Equal(new float[] { 0, 1, 2 }, ids[7].data<float>().ToArray());
    }
}
