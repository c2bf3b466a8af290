using System.Diagnostics;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Nn;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Benchmarks;

/// <summary>
/// Style switching and per-step LoRA cost on the mid-size FLUX config (inner 384 = 3 heads x 128, MLP 1536, 2 double +
/// 4 single blocks, T5/CLIP widths 4096/768) with a rank-16 LoRA on every block Linear (FLUX.1-dev rank 128 scaled by
/// 384/3072). One step = one transformer forward on N image + T text tokens. Options: --tokens N (image tokens,
/// default 1024), --text T (512), bf16 (default fp32), --rounds R (7), --threads K, --linears (run only the model's
/// Linear layers, each on the tokens it sees: no attention, so LoRA shares come out as upper bounds).
/// </summary>
public sealed class LoraSwitchBenchmark : IBenchmark
{
    public string Name => "lora-switch";
    public string Description => "style switch (cache hit vs disk) and per-step cost of run-time vs merged LoRA (mid-size FLUX)";

    private const long Inner = 384, InChannels = 64, Joint = 4096, Pooled = 768;
    private const int Doubles = 2, Singles = 4, Rank = 16;

    public void Run(string[] args)
    {
        long imageTokens = LongArg(args, "--tokens", 1024), textTokens = LongArg(args, "--text", 512);
        int rounds = (int)LongArg(args, "--rounds", 7);
        if (LongArg(args, "--threads", 0) is > 0 and var threads) torch.set_num_threads((int)threads);
        var dtype = args.Contains("bf16") ? ScalarType.BFloat16 : ScalarType.Float32;

        using var inference = torch.inference_mode();
        var shapes = MidSizeShapes();
        bool linearsOnly = args.Contains("--linears");
        using var stack = linearsOnly ? new LinearStack(shapes, dtype, imageTokens, textTokens) : null;
        using var flux = linearsOnly ? null : MidSizeFlux(dtype);
        var inputs = flux is null ? null : Inputs(imageTokens, textTokens, dtype);
        nn.Module model = (nn.Module?)stack ?? flux!;
        long parameterBytes = model.parameters().Sum(p => p.NumberOfElements * p.ElementSize);
        var targets = new LoraTargetModules(model);
        var dir = Directory.CreateTempSubdirectory("lora-bench-").FullName;
        try
        {
            var files = Enumerable.Range(0, 3).Select(i => WriteLora(Path.Combine(dir, $"style{i}.safetensors"), shapes, i)).ToArray();
            var lt = new LoraModelTargets(targets.Shapes);
            using var cache = new LoraAdapterCache(lt, dtype, CPU, new LoraCacheOptions { HostBudgetBytes = 1L << 30 });
            cache.PreloadAsync(files).GetAwaiter().GetResult();
            long loraBytes = cache.Metrics.Bytes / files.Length;

            // A "switch" is everything a job does to change style: lease the adapter, build the set, attach, detach, release.
            int next = 0;
            void SwitchHit()
            {
                using var lease = cache.AcquireAsync(files[next++ % files.Length]).GetAwaiter().GetResult();
                using var attached = new LoraAdapterSet().Add(lease.Adapter, 0.8).Attach(targets);
            }
            void SwitchFromDisk()
            {
                using var adapter = LoraLoader.Load(files[next++ % files.Length], lt, dtype, CPU);
                using var attached = new LoraAdapterSet().Add(adapter, 0.8).Attach(targets);
            }
            using var hitLease = cache.AcquireAsync(files[0]).GetAwaiter().GetResult();
            void MergeAndRestore()
            {
                using var merged = new LoraAdapterSet().Add(hitLease.Adapter, 0.8).Merge(targets);
            }

            var switchHit = LoraTiming.Mean(SwitchHit, 200);
            var switchDisk = LoraTiming.Median(SwitchFromDisk, 9, warmup: 2);
            var merge = LoraTiming.Median(MergeAndRestore, 9, warmup: 2);

            var set = new LoraAdapterSet().Add(hitLease.Adapter, 0.8);
            void Step()
            {
                if (stack is not null) stack.Step();
                else
                {
                    using var scope = NewDisposeScope();
                    flux!.Forward(inputs!);
                }
            }
            void StepRunTime()
            {
                using var a = set.Attach(targets);
                Step();
            }
            // Merged weights are measured inside the same interleaved rounds (merge once, swap in and out by copy).
            var mergedScope = set.Merge(targets);
            var mergedWeights = targets.Modules.Values.Select(l => l.weight.detach().clone()).ToList();
            mergedScope.Dispose();
            var baseWeights = targets.Modules.Values.Select(l => l.weight.detach().clone()).ToList();
            void Swap(List<Tensor> source)
            {
                int i = 0;
                foreach (var l in targets.Modules.Values) l.weight.detach().copy_(source[i++]);
            }
            void StepMerged()
            {
                Swap(mergedWeights);
                try { Step(); }
                finally { Swap(baseWeights); }
            }
            var swapCost = LoraTiming.Median(() => { Swap(mergedWeights); Swap(baseWeights); }, 5);
            var steps = LoraTiming.Interleaved([Step, StepRunTime, StepMerged], rounds, warmup: 1);
            var baseStep = steps[0];
            var runTimeStep = steps[1];
            var mergedStep = steps[2] - swapCost;

            Console.WriteLine((linearsOnly ? "Linear layers only (no attention) of the" : "FluxTransformer2DModel,") +
                              $" mid-size config (inner {Inner}, {Doubles} double + {Singles} single blocks, {targets.Modules.Count} Linears, " +
                              $"{parameterBytes / 1e6:F1} MB {dtype}), {imageTokens} image + {textTokens} text tokens, " +
                              $"rank-{Rank} LoRA on {hitLease.Adapter.Modules.Count} modules ({loraBytes / 1e6:F2} MB), {torch.get_num_threads()} threads, CPU.");
            Console.WriteLine("Wall = median wall time; CPU = median process CPU time (less sensitive to other load on a shared machine).");
            Console.WriteLine();
            Console.WriteLine("| measurement | wall ms | CPU ms | CPU share of one base step |");
            Console.WriteLine("|---|---:|---:|---:|");
            Row("one step, no LoRA (base)", baseStep, baseStep);
            Row("one step, run-time adapters (incl. attach/detach)", runTimeStep, baseStep);
            Row("one step, merged weights", mergedStep, baseStep);
            Row("style switch, cache hit (lease + attach + detach)", switchHit, baseStep);
            Row("style switch, load from disk (read + convert + attach)", switchDisk, baseStep);
            Row("merge + exact restore (per generation)", merge, baseStep);
            double perStepExtra = runTimeStep.Cpu - baseStep.Cpu;
            Console.WriteLine();
            Console.WriteLine(perStepExtra > 0
                ? $"Run-time adapters add {perStepExtra:F2} ms CPU per step ({100 * perStepExtra / baseStep.Cpu:F1}%); merge + restore costs {merge.Cpu:F2} ms CPU, i.e. merging pays off after {merge.Cpu / perStepExtra:F1} transformer calls."
                : "Run-time adapters were not measurably slower than the base step here.");
            Console.WriteLine($"Cache-hit switch = {100 * switchHit.Cpu / baseStep.Cpu:F3}% of a base step (CPU time; wall {100 * switchHit.Wall / baseStep.Wall:F3}%; target < 2%).");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }

        static void Row(string what, LoraTiming t, LoraTiming b) => Console.WriteLine($"| {what} | {t.Wall:F3} | {t.Cpu:F3} | {100 * t.Cpu / b.Cpu:F2}% |");
    }

    private static FluxTransformer2DModel MidSizeFlux(ScalarType dtype)
    {
        var model = new FluxTransformer2DModel(MidSizeConfig(), new ParameterFactory(dtype, CPU));
        var g = new Generator(3);
        using var scope = NewDisposeScope();
        foreach (var (name, p) in model.named_parameters())
        {
            var u = rand(p.shape, generator: g) * 2 - 1;
            p.detach().copy_(name.EndsWith(".bias", StringComparison.Ordinal) ? u * 0.1 : p.ndim == 1 ? u * 0.25 + 1 : u / Math.Sqrt(p.shape[1]));
        }
        return model;
    }

    private static FluxTransformerConfig MidSizeConfig() => new()
    {
        NumLayers = Doubles, NumSingleLayers = Singles, NumAttentionHeads = (int)(Inner / 128), AttentionHeadDim = 128,
        JointAttentionDim = (int)Joint, PooledProjectionDim = (int)Pooled, GuidanceEmbeds = true, InChannels = (int)InChannels, OutChannels = (int)InChannels,
    };

    private static FluxTransformerInputs Inputs(long imageTokens, long textTokens, ScalarType dtype)
    {
        var g = new Generator(4);
        long side = (long)Math.Sqrt(imageTokens);
        long rows = side, cols = imageTokens / side;
        var ids = zeros(rows * cols, 3);
        ids[.., 1] = arange(rows, dtype: ScalarType.Float32).repeat_interleave(cols);
        ids[.., 2] = arange(cols, dtype: ScalarType.Float32).repeat(rows);
        var inputs = new FluxTransformerInputs(randn([1, rows * cols, InChannels], generator: g).to(dtype), randn([1, textTokens, Joint], generator: g).to(dtype),
            randn([1, Pooled], generator: g).to(dtype), tensor(new[] { 0.75f }), tensor(new[] { 3.5f }), ids, zeros(textTokens, 3));
        foreach (var t in new[] { inputs.HiddenStates, inputs.EncoderHiddenStates, inputs.PooledProjections, inputs.Timestep, inputs.Guidance!, inputs.ImageIds, inputs.TextIds })
            t.DetachFromDisposeScope();
        return inputs;
    }

    private static long LongArg(string[] args, string name, long fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length && long.TryParse(args[i + 1], out var v) ? v : fallback;
    }

    /// <summary>The Linear layers of the mid-size FLUX in diffusers naming, read off the model built on the meta device.</summary>
    public static Dictionary<string, LinearShape> MidSizeShapes()
    {
        using var meta = new FluxTransformer2DModel(MidSizeConfig(), ParameterFactory.Meta(ScalarType.Float32));
        return new LoraTargetModules(meta).Shapes.Shapes.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
    }

    /// <summary>A diffusers-format LoRA on every block Linear (what ai-toolkit/kohya FLUX LoRAs cover).</summary>
    private static string WriteLora(string path, Dictionary<string, LinearShape> shapes, int seed)
    {
        using var scope = NewDisposeScope();
        var g = new Generator((ulong)(100 + seed));
        var tensors = new Dictionary<string, Tensor>();
        foreach (var (name, shape) in shapes.Where(kv => kv.Key.Contains("blocks.", StringComparison.Ordinal)))
        {
            tensors[$"transformer.{name}.lora_A.weight"] = randn([Rank, shape.In], generator: g).div_(Math.Sqrt(shape.In));
            tensors[$"transformer.{name}.lora_B.weight"] = randn([shape.Out, Rank], generator: g).mul_(0.01);
            tensors[$"transformer.{name}.alpha"] = tensor((float)Rank);
        }
        SafetensorsWriter.Save(path, tensors);
        return path;
    }

    /// <summary>The model's Linears as one module tree (diffusers names), each run per step on the tokens it sees.</summary>
    private sealed class LinearStack : nn.Module<Tensor, Tensor>
    {
        private readonly List<(Linear Linear, Tensor Input)> _calls = [];

        public LinearStack(Dictionary<string, LinearShape> shapes, ScalarType dtype, long imageTokens, long textTokens) : base("LinearStack")
        {
            var f = new ParameterFactory(dtype, CPU);
            var g = new Generator(7);
            var nodes = new Dictionary<string, nn.Module>(StringComparer.Ordinal) { [""] = this };
            foreach (var (name, shape) in shapes.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                var linear = new Linear(shape.In, shape.Out, f);
                using (no_grad())
                {
                    linear.weight.copy_(randn([shape.Out, shape.In], generator: g).div_(Math.Sqrt(shape.In)));
                    linear.bias!.zero_();
                }
                var parts = name.Split('.');
                var parent = "";
                for (int i = 0; i < parts.Length - 1; i++)
                {
                    var path = parent.Length == 0 ? parts[i] : parent + "." + parts[i];
                    if (!nodes.ContainsKey(path))
                    {
                        var node = new Node();
                        nodes[parent].register_module(parts[i], node);
                        nodes[path] = node;
                    }
                    parent = path;
                }
                nodes[parent].register_module(parts[^1], linear);
                long tokens = TokensOf(name, imageTokens, textTokens);
                var input = randn([1, tokens, shape.In], generator: g).to(dtype);
                input.DetachFromDisposeScope();
                _calls.Add((linear, input));
            }
        }

        private static long TokensOf(string name, long image, long text)
        {
            if (name.StartsWith("time_text_embed", StringComparison.Ordinal) || name.EndsWith("norm1.linear", StringComparison.Ordinal) ||
                name.EndsWith("norm1_context.linear", StringComparison.Ordinal) || name.EndsWith("norm.linear", StringComparison.Ordinal) || name == "norm_out.linear")
                return 1;
            if (name.StartsWith("single_", StringComparison.Ordinal)) return image + text;
            if (name == "context_embedder" || name.Contains("add_", StringComparison.Ordinal) || name.Contains("ff_context", StringComparison.Ordinal) ||
                name.EndsWith("to_add_out", StringComparison.Ordinal))
                return text;
            return image;
        }

        public void Step()
        {
            foreach (var (linear, input) in _calls)
            {
                using var scope = NewDisposeScope();
                linear.forward(input);
            }
        }

        public override Tensor forward(Tensor x) => x;

        private sealed class Node() : nn.Module("Node");
    }
}
