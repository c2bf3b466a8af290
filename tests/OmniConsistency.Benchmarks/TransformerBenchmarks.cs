using OmniConsistency.Inference;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using static TorchSharp.torch;

namespace OmniConsistency.Benchmarks;

/// <summary>A mid-size FLUX with random weights: FLUX's head dim and RoPE axes, scaled-down width and depth.</summary>
internal static class BenchmarkFlux
{
    public static FluxTransformerConfig Config { get; } = new()
    {
        NumAttentionHeads = 3, AttentionHeadDim = 128, NumLayers = 2, NumSingleLayers = 4,
        JointAttentionDim = 256, PooledProjectionDim = 128, GuidanceEmbeds = true, AxesDimsRope = [16, 56, 56],
    };

    /// <summary>Writes random weights (U(±1/√fan_in), small biases, norm scales near 1) to a diffusers folder.</summary>
    public static string WriteRandomCheckpoint(long seed)
    {
        var dir = Directory.CreateTempSubdirectory("flux-bench-").FullName;
        using var model = new FluxTransformer2DModel(Config, ParameterFactory.Cpu());
        var g = new Generator((ulong)seed);
        using (no_grad())
            foreach (var (name, p) in model.named_parameters())
            {
                using var scope = NewDisposeScope();
                var u = rand(p.shape, generator: g) * 2 - 1;
                p.copy_(name.EndsWith(".bias", StringComparison.Ordinal) ? u * 0.1 : p.ndim == 1 ? u * 0.25 + 1 : u / Math.Sqrt(p.shape[1]));
            }
        SafetensorsWriter.Save(Path.Combine(dir, "diffusion_pytorch_model.safetensors"),
            model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter));
        var c = Config;
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {"_class_name": "FluxTransformer2DModel", "attention_head_dim": {{c.AttentionHeadDim}}, "num_attention_heads": {{c.NumAttentionHeads}},
             "num_layers": {{c.NumLayers}}, "num_single_layers": {{c.NumSingleLayers}}, "joint_attention_dim": {{c.JointAttentionDim}},
             "pooled_projection_dim": {{c.PooledProjectionDim}}, "guidance_embeds": true, "in_channels": 64}
            """);
        return dir;
    }

    /// <summary>Arguments: [rounds] [threads]; sets torch's thread count when given (1 is steadier on a busy machine).</summary>
    public static int ParseArgs(string[] args)
    {
        if (args.Length > 1 && int.TryParse(args[1], out var threads) && threads > 0) set_num_threads(threads);
        return args.Length > 0 && int.TryParse(args[0], out var rounds) && rounds > 0 ? rounds : 7;
    }

    /// <summary>(0,row,col) ids of a rows×cols token grid.</summary>
    public static Tensor GridIds(long rows, long cols, float scaleRow = 1, float scaleCol = 1)
    {
        var ids = zeros(rows * cols, 3);
        ids[.., 1] = arange(rows, dtype: ScalarType.Float32).repeat_interleave(cols) * scaleRow;
        ids[.., 2] = arange(cols, dtype: ScalarType.Float32).repeat(rows) * scaleCol;
        return ids.DetachFromDisposeScope();
    }

    public static FluxTransformerInputs Inputs(long imageRows, long imageCols, long textTokens, long seed)
    {
        var g = new Generator((ulong)seed);
        return new FluxTransformerInputs(
            randn([1, imageRows * imageCols, 64], generator: g).DetachFromDisposeScope(),
            randn([1, textTokens, Config.JointAttentionDim], generator: g).DetachFromDisposeScope(),
            randn([1, Config.PooledProjectionDim], generator: g).DetachFromDisposeScope(),
            full([1], 0.75f).DetachFromDisposeScope(),
            full([1], 3.5f).DetachFromDisposeScope(),
            GridIds(imageRows, imageCols),
            zeros(textTokens, 3).DetachFromDisposeScope());
    }
}

/// <summary>One transformer forward, fp32 vs bf16 on CPU (512 image + 64 text tokens, inner dim 384, 2 double + 4 single blocks).</summary>
public sealed class TransformerForwardBenchmark : IBenchmark
{
    public string Name => "transformer-forward";
    public string Description => "FLUX transformer forward, mid-size config, fp32 vs bf16 (CPU)";

    public void Run(string[] args)
    {
        int rounds = BenchmarkFlux.ParseArgs(args);
        var dir = BenchmarkFlux.WriteRandomCheckpoint(seed: 1);
        try
        {
            using var fp32 = FluxTransformerLoader.FromDiffusersFolder(dir, new ParameterFactory(ScalarType.Float32, CPU));
            using var bf16 = FluxTransformerLoader.FromDiffusersFolder(dir, new ParameterFactory(ScalarType.BFloat16, CPU));
            var inputs = BenchmarkFlux.Inputs(16, 32, 64, seed: 2);
            Action Forward(FluxTransformer2DModel model) => () =>
            {
                using var scope = NewDisposeScope();
                using var mode = inference_mode();
                model.Forward(inputs);
            };
            var ms = Measure.InterleavedMedianMs([Forward(fp32), Forward(bf16)], rounds);
            double diff;
            using (NewDisposeScope())
            {
                var a = fp32.Forward(inputs);
                var b = bf16.Forward(inputs).to(ScalarType.Float32);
                diff = ((a - b).abs().max() / a.abs().max()).item<float>();
            }
            var c = BenchmarkFlux.Config;
            Console.WriteLine($"config: D={c.InnerDim} ({c.NumAttentionHeads}×{c.AttentionHeadDim}), {c.NumLayers} double + {c.NumSingleLayers} single blocks, " +
                $"512 image + 64 text tokens, batch 1; {TorchRuntime.Describe()}; median of {rounds} interleaved rounds");
            Console.WriteLine();
            Console.WriteLine("| dtype | forward ms | time vs fp32 |");
            Console.WriteLine("|---|---:|---:|");
            Console.WriteLine($"| float32 | {ms[0]:F1} | 1.00 |");
            Console.WriteLine($"| bfloat16 | {ms[1]:F1} | {ms[1] / ms[0]:F2} |");
            Console.WriteLine();
            Console.WriteLine($"bf16 vs fp32 output: max |diff| / max |fp32| = {diff:G3}");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}

/// <summary>
/// The condition branch's cost at FLUX's token ratios scaled down (512 noisy + 64 text + 128 condition tokens; FLUX at
/// 1024² with cond 512: 4096 + 512 + 1024): a denoising step with the condition K/V bank vs a plain step, and the
/// warm-up pass amortised over 25 steps. fp32 on CPU.
/// </summary>
public sealed class TransformerConditionBranchBenchmark : IBenchmark
{
    public string Name => "transformer-condition-branch";
    public string Description => "OmniConsistency condition branch: step with bank vs plain step, warm-up amortised over 25 steps";

    public void Run(string[] args)
    {
        int rounds = BenchmarkFlux.ParseArgs(args);
        const int steps = 25, loraRank = 16;
        var dir = BenchmarkFlux.WriteRandomCheckpoint(seed: 1);
        try
        {
            using var model = FluxTransformerLoader.FromDiffusersFolder(dir, ParameterFactory.Cpu());
            var loraPath = Path.Combine(dir, "consistency.safetensors");
            var g = new Generator(3);
            SafetensorsWriter.Save(loraPath, Inference.Consistency.ConsistencyLora.ExpectedShapes(model.Config, loraRank)
                .ToDictionary(kv => kv.Key, kv => (randn(kv.Value, generator: g) * 0.02).DetachFromDisposeScope()));
            using var lora = Inference.Consistency.ConsistencyLora.Load(loraPath, model.Config, CPU);

            var inputs = BenchmarkFlux.Inputs(16, 32, 64, seed: 2);
            var condition = randn([1, 128, 64], generator: g).DetachFromDisposeScope();
            var conditionIds = Inference.Consistency.ConditionPositionIds.Create(16, 32, 32, 64, ScalarType.Float32).DetachFromDisposeScope();
            var warmupInputs = new Inference.Consistency.ConditionWarmupInputs(condition, conditionIds, inputs.EncoderHiddenStates,
                inputs.PooledProjections, inputs.Guidance, inputs.TextIds);
            var textFree = warmupInputs with { EncoderHiddenStates = inputs.EncoderHiddenStates.narrow(1, 0, 0), TextIds = inputs.TextIds.narrow(0, 0, 0) };
            using var bank = Inference.Consistency.ConditionBranch.Warmup(model, lora, warmupInputs).Bank;
            var withBank = new FluxForwardContext { Attention = bank };

            Action Run(Action body) => () =>
            {
                using var scope = NewDisposeScope();
                using var mode = inference_mode();
                body();
            };
            // Process CPU time as well as wall time: on a shared machine waiting for a core inflates wall times
            // unevenly, while CPU time (1 torch thread) counts only this process's work. Ratios use CPU time.
            var t = LoraTiming.Interleaved(
            [
                Run(() => model.Forward(inputs)),
                Run(() => model.Forward(inputs, withBank)),
                Run(() => Inference.Consistency.ConditionBranch.Warmup(model, lora, warmupInputs).Bank.Dispose()),
                Run(() => Inference.Consistency.ConditionBranch.Warmup(model, lora, textFree).Bank.Dispose()),
            ], rounds);
            double plain = t[0].Cpu, conditioned = t[1].Cpu, warmup = t[2].Cpu, warmupTextFree = t[3].Cpu;
            double generationPlain = steps * plain, generationConditioned = warmup + steps * conditioned;

            var c = BenchmarkFlux.Config;
            Console.WriteLine($"config: D={c.InnerDim} ({c.NumAttentionHeads}×{c.AttentionHeadDim}), {c.NumLayers} double + {c.NumSingleLayers} single blocks, " +
                $"512 noisy + 64 text + 128 condition tokens, batch 1, fp32, consistency LoRA rank {loraRank}; {TorchRuntime.Describe()}; " +
                $"median of {rounds} interleaved rounds");
            Console.WriteLine();
            Console.WriteLine("| measurement | wall ms | CPU ms | vs plain step (CPU) |");
            Console.WriteLine("|---|---:|---:|---:|");
            string[] labels = ["plain step (no condition)", "step with condition bank", "warm-up pass, upstream form (text + condition, mask)", "warm-up pass, text-free (§8.8)"];
            for (int i = 0; i < labels.Length; i++)
                Console.WriteLine($"| {labels[i]} | {t[i].Wall:F1} | {t[i].Cpu:F1} | {t[i].Cpu / plain:F3} |");
            Console.WriteLine();
            Console.WriteLine($"{steps}-step generation (CPU): plain {generationPlain:F0} ms, with condition branch {generationConditioned:F0} ms " +
                $"(×{generationConditioned / generationPlain:F3}; warm-up share {warmup / generationConditioned:P1}); " +
                $"with the text-free warm-up ×{(warmupTextFree + steps * conditioned) / generationPlain:F3}");

            // Memory: the bank holds K and V of every attention layer for the condition tokens, [B, heads, C, head_dim].
            var dev = new FluxTransformerConfig(); // FLUX.1-dev's sizes
            const long devConditionTokens = 512 / 16 * (512 / 16); // cond_size 512
            long devBank = 2L * dev.TotalAttentionLayers * devConditionTokens * dev.InnerDim * 2;
            Console.WriteLine($"condition K/V bank: {bank.ByteSize / 1024.0:F0} KiB here (2 × {bank.LayerCount} layers × {bank.ConditionTokens} tokens × " +
                $"{c.InnerDim} × 4 B); FLUX.1-dev ({dev.TotalAttentionLayers} layers, D {dev.InnerDim}) at cond 512 ({devConditionTokens} tokens) in bf16: " +
                $"{devBank / 1048576.0:F0} MiB per sample, freed when the generation ends");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
