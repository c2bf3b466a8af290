using OmniConsistency.Inference.Consistency;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.Sampling;
using OmniConsistency.Inference.Tests.Flux;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Consistency;

/// <summary>
/// The condition branch on the hidden set's second architecture (tiny-flux-h: 3 heads × 16, D = 48, axes [4,4,8],
/// 3 double + 1 single block) with a generated rank-6 consistency LoRA, at sizes the public cases do not use:
/// non-square outputs in both orientations, other condition grids, batch 2 with a different condition per sample.
/// </summary>
public class ConditionBranchGeneralityTests
{
    private static readonly FluxTransformerConfig Config = FluxTestModels.TinyH;
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static (FluxTransformer2DModel Model, ConsistencyLora Lora) TinyH(int rank = 6)
    {
        var model = FluxTestModels.Random(Config, seed: 21);
        var g = new Generator(22);
        // Large enough that the LoRA visibly moves the bank (weights U(±1/√fan_in)-sized).
        var tensors = ConsistencyLora.ExpectedShapes(Config, rank).ToDictionary(kv => kv.Key, kv => randn(kv.Value, generator: g) * 0.3);
        return (model, ConsistencyLora.Load(new DictionarySource(tensors), Config, CPU, ScalarType.Float32));
    }

    /// <summary>Batch-2 warm-up and steps (per-sample condition, text, guidance, timestep) for an H×W output and a cs×cs condition.</summary>
    private sealed record Case(Tensor Condition, Tensor ConditionIds, Tensor Text, Tensor Pooled, Tensor Guidance, Tensor TextIds,
        Tensor Latents, Tensor NoiseIds, Tensor Timestep)
    {
        public static Case Create(int height, int width, int condSize, long textLength, long seed)
        {
            var g = new Generator((ulong)seed);
            long h = 2 * (height / 16), w = 2 * (width / 16), hc = 2 * (condSize / 16);
            return new Case(
                randn([2, hc / 2 * (hc / 2), Config.InChannels], generator: g),
                ConditionPositionIds.Create(hc, hc, h, w, ScalarType.Float32),
                randn([2, textLength, Config.JointAttentionDim], generator: g),
                randn([2, Config.PooledProjectionDim], generator: g),
                tensor(new[] { 3.5f, 2.0f }),
                zeros(textLength, 3),
                randn([2, h / 2 * (w / 2), Config.InChannels], generator: g),
                FluxLatents.ImageIds(h, w, ScalarType.Float32),
                tensor(new[] { 0.9f, 0.35f }));
        }

        public Case Row(int i) => this with
        {
            Condition = Condition[i..(i + 1)], Text = Text[i..(i + 1)], Pooled = Pooled[i..(i + 1)], Guidance = Guidance[i..(i + 1)],
            Latents = Latents[i..(i + 1)], Timestep = Timestep[i..(i + 1)],
        };

        public ConditionWarmupInputs Warmup => new(Condition, ConditionIds, Text, Pooled, Guidance, TextIds);

        public FluxTransformerInputs Step => new(Latents, Text, Pooled, Timestep, Guidance, NoiseIds, TextIds);
    }

    private static float MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    [Theory]
    [InlineData(80, 48, 32, 5)]   // tall output, 2×2 condition grid (scales 2.5 / 1.5)
    [InlineData(48, 80, 48, 3)]   // wide output, 3×3 condition grid (fractional scales 1 / 1.667)
    [InlineData(64, 96, 72, 4)]   // cond_size not a multiple of 16: 2·(72/16) = 8 → a 4×4 grid
    public void BatchTwoRowsEqualTheirBatchOneRuns(int height, int width, int condSize, long textLength)
    {
        var (model, lora) = TinyH();
        using var _m = model;
        using var _l = lora;
        using var scope = NewDisposeScope();
        var c = Case.Create(height, width, condSize, textLength, seed: height + width + condSize);

        using var capture = new TensorCapture();
        var batch = ConditionBranch.Warmup(model, lora, c.Warmup, loraWeight: 1.3, capture.Sink);
        using var bank = batch.Bank;
        Assert.Equal(2, bank.Batch);
        Assert.Equal(c.Condition.shape[1], bank.ConditionTokens);
        var stepped = model.Forward(c.Step, new FluxForwardContext { Attention = bank });

        for (int i = 0; i < 2; i++)
        {
            var row = c.Row(i);
            using var rowCapture = new TensorCapture();
            var alone = ConditionBranch.Warmup(model, lora, row.Warmup, loraWeight: 1.3, rowCapture.Sink);
            using var rowBank = alone.Bank;
            Assert.True(MaxDiff(batch.Output[i..(i + 1)], alone.Output) < 1e-5, $"warm-up output row {i}");
            for (int layer = 0; layer < bank.LayerCount; layer++)
            {
                Assert.True(MaxDiff(bank.Layer(layer).Key[i..(i + 1)], rowBank.Layer(layer).Key) < 1e-5, $"bank key row {i} layer {layer}");
                Assert.True(MaxDiff(bank.Layer(layer).Value[i..(i + 1)], rowBank.Layer(layer).Value) < 1e-5, $"bank value row {i} layer {layer}");
                var rawName = $"bank.{model.AttentionProcessorName(layer)}.key";
                Assert.Equal([2, Config.NumAttentionHeads, c.Condition.shape[1], Config.AttentionHeadDim], capture.Tensors[rawName].shape);
                Assert.True(MaxDiff(capture.Tensors[rawName][i..(i + 1)], rowCapture.Tensors[rawName]) < 1e-5, $"raw key row {i} layer {layer}");
            }
            var rowStep = model.Forward(row.Step, new FluxForwardContext { Attention = rowBank });
            Assert.True(MaxDiff(stepped[i..(i + 1)], rowStep) < 1e-5, $"step output row {i}");
        }

        // The rows really differ, and the consistency LoRA really acts (so the comparisons above can fail).
        Assert.True(MaxDiff(stepped[0], stepped[1]) > 1e-2);
        using var noLora = ConditionBranch.Warmup(model, lora, c.Warmup, loraWeight: 0).Bank;
        Assert.True(MaxDiff(noLora.Layer(0).Key, bank.Layer(0).Key) > 1e-3);
    }

    /// <summary>
    /// Upstream's bank: raw keys (after the LoRA, before norm_k and RoPE) and values from the warm-up; at every step
    /// norm_k and RoPE are applied again with the condition ids, which here are recomputed independently from the
    /// formula (0, i·h/hc, j·w/wc).
    /// </summary>
    private sealed class UpstreamRawBank(FluxTransformer2DModel model, IReadOnlyList<(Tensor RawKey, Tensor Value)> layers, RotaryTable conditionRope)
        : IFluxAttentionExtension
    {
        public Tensor AdjustProjection(int layer, QkvProjection which, Tensor input, Tensor projected, long textLength) => projected;
        public Tensor? AttentionMask(int layer, long textLength, long queryLength, long keyLength) => null;
        public void ObserveImageKeyValue(int layer, Tensor rawKey, Tensor key, Tensor value) { }

        public (Tensor Key, Tensor Value)? AppendedKeyValue(int layer)
        {
            var (raw, value) = layers[layer];
            var normK = layer < model.transformer_blocks.Count
                ? model.transformer_blocks[layer].attn.norm_k
                : model.single_transformer_blocks[layer - model.transformer_blocks.Count].attn.norm_k;
            return (FluxRotaryEmbedding.Apply(normK.forward(raw), conditionRope), value);
        }
    }

    [Theory]
    [InlineData(80, 48, 32)]
    [InlineData(48, 80, 64)]
    [InlineData(96, 32, 48)]
    public void CachedBankEqualsUpstreamRawKeysRotatedAtEachStep(int height, int width, int condSize)
    {
        var (model, lora) = TinyH();
        using var _m = model;
        using var _l = lora;
        using var scope = NewDisposeScope();
        var c = Case.Create(height, width, condSize, textLength: 4, seed: 7 * height + width);
        using var capture = new TensorCapture();
        var warmup = ConditionBranch.Warmup(model, lora, c.Warmup, capture: capture.Sink);
        using var bank = warmup.Bank;

        long grid = condSize / 16, rows = height / 16, cols = width / 16;
        var ids = new float[grid * grid * 3];
        for (long i = 0; i < grid; i++)
            for (long j = 0; j < grid; j++)
            {
                ids[(i * grid + j) * 3 + 1] = i * (float)((double)rows / grid);
                ids[(i * grid + j) * 3 + 2] = j * (float)((double)cols / grid);
            }
        var conditionRope = model.RotaryTable(tensor(ids, [grid * grid, 3]));
        var raw = Enumerable.Range(0, bank.LayerCount).Select(l =>
        {
            var name = model.AttentionProcessorName(l);
            return (capture.Tensors[$"bank.{name}.key"], capture.Tensors[$"bank.{name}.value"]);
        }).ToList();
        var upstream = new UpstreamRawBank(model, raw, conditionRope);

        for (int layer = 0; layer < bank.LayerCount; layer++)
        {
            var (key, value) = upstream.AppendedKeyValue(layer)!.Value;
            Assert.True(MaxDiff(bank.Layer(layer).Key, key) < 1e-6, $"layer {layer} key");
            Assert.True(MaxDiff(bank.Layer(layer).Value, value) == 0, $"layer {layer} value");
        }
        var cached = model.Forward(c.Step, new FluxForwardContext { Attention = bank });
        var recomputed = model.Forward(c.Step, new FluxForwardContext { Attention = upstream });
        Assert.True(MaxDiff(cached, recomputed) < 1e-5);
        // The condition positions matter: rotating the cached keys with the noise grid's own ids changes the step.
        var wrongRope = model.RotaryTable(FluxLatents.ImageIds(2 * grid, 2 * grid, ScalarType.Float32));
        if (rows != grid || cols != grid)
            Assert.True(MaxDiff(cached, model.Forward(c.Step, new FluxForwardContext { Attention = new UpstreamRawBank(model, raw, wrongRope) })) > 1e-4);
    }

    [Theory]
    [InlineData(80, 48, 32)]
    [InlineData(48, 80, 48)]
    public void SamplerBatchTwoSharesTheConditionAndEachSampleEqualsItsSoloRun(int height, int width, int condSize)
    {
        var (model, lora) = TinyH();
        using var _m = model;
        using var _l = lora;
        var scheduler = new FlowMatchEulerScheduler(FlowMatchSchedulerConfig.FluxDev);
        var sampler = new FluxConditionedSampler(model, scheduler, lora);
        using var scope = NewDisposeScope();
        var g = new Generator(31);
        long h = 2 * (height / 16), w = 2 * (width / 16), hc = 2 * (condSize / 16);
        var request = new ConditionedSamplingRequest
        {
            PromptEmbeds = randn([2, 6, Config.JointAttentionDim], generator: g),
            PooledPromptEmbeds = randn([2, Config.PooledProjectionDim], generator: g),
            ConditionLatents = randn([1, 16, hc, hc], generator: g),
            Noise = randn([2, 16, h, w], generator: g),
            Height = height,
            Width = width,
            Steps = 3,
            GuidanceScale = 4.0,
            ConsistencyWeight = 0.7,
        };
        using var capture = new TensorCapture();
        var latents = sampler.Sample(request, cancellationToken: Ct, capture: capture.Sink);
        Assert.Equal([2, h / 2 * (w / 2), 64], latents.shape);
        // mu from the noise tokens only; ids are [noise; condition].
        Assert.Equal(scheduler.CreateSchedule(3, h / 2 * (w / 2)).Sigmas, capture.Tensors["sigmas"].data<float>().ToArray());
        Assert.Equal([h / 2 * (w / 2) + hc / 2 * (hc / 2), 3], capture.Tensors["latent_image_ids"].shape);
        for (int i = 0; i < 2; i++)
        {
            var alone = sampler.Sample(request with
            {
                PromptEmbeds = request.PromptEmbeds[i..(i + 1)], PooledPromptEmbeds = request.PooledPromptEmbeds[i..(i + 1)],
                Noise = request.Noise[i..(i + 1)],
            }, cancellationToken: Ct);
            Assert.True(MaxDiff(latents[i..(i + 1)], alone) < 1e-5, $"sample {i}");
        }
        var withoutCondition = sampler.Sample(request with { ConditionLatents = null }, cancellationToken: Ct);
        Assert.True(MaxDiff(latents, withoutCondition) > 1e-3);
    }

    [Theory]
    [InlineData(64, 16)]
    [InlineData(48, 9)]
    [InlineData(32, 4)]
    [InlineData(17, 1)]
    [InlineData(40, 6)]   // upstream's processors count 6 tokens while the pipeline makes a 2×2 grid: not reproducible
    [InlineData(72, 20)]
    public void UpstreamConditionTokenCountFollowsItsLeftToRightFormula(int condSize, long tokens) =>
        Assert.Equal(tokens, GoldenConsistencyLora.UpstreamConditionTokens(condSize));
}
