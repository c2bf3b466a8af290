using System.Globalization;
using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Benchmarks;

/// <summary>
/// T5 encoder forward on one 512-token prompt (FLUX's max_sequence_length) with random weights, fp32 against bf16,
/// for the golden tiny config and a mid-size config. Both dtypes use the same weights (bf16 = rounded fp32) and run
/// interleaved, so machine noise hits them alike. Options: --rounds N (default 5), --threads N, --tokens N (512).
/// </summary>
public sealed class TextEncoderBenchmark : IBenchmark
{
    public string Name => "t5-encoder";
    public string Description => "T5 encoder, 512 tokens, random weights: fp32 vs bf16 on the tiny and a mid-size config (ms, ratios)";

    private static readonly (string Name, T5EncoderConfig Config)[] Configs =
    [
        ("tiny (golden: d 32, 4×8 heads, ff 64, 2 layers)", new T5EncoderConfig { DModel = 32, DKv = 8, NumHeads = 4, DFf = 64, NumLayers = 2, DenseActFn = "gelu_new", IsGatedAct = true }),
        ("mid (d 512, 8×64 heads, ff 1024, 4 layers)", new T5EncoderConfig { DModel = 512, DKv = 64, NumHeads = 8, DFf = 1024, NumLayers = 4, DenseActFn = "gelu_new", IsGatedAct = true }),
    ];

    public void Run(string[] args)
    {
        int rounds = (int)Option(args, "--rounds", 5);
        int tokens = (int)Option(args, "--tokens", 512);
        if (args.Contains("--threads")) set_num_threads((int)Option(args, "--threads", 2));
        var load = File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "?";
        Console.WriteLine($"torch threads {get_num_threads()}, {Environment.ProcessorCount} cores, load average {load}, CPU bf16 support: {CpuBf16Flags()}; {tokens} tokens, batch 1, median of {rounds} interleaved rounds after 1 warm-up");
        Console.WriteLine();
        Console.WriteLine("| config | parameters | fp32 ms | bf16 ms | bf16 / fp32 | bf16 max abs diff vs fp32 (output max) |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|");
        foreach (var (name, config) in Configs)
        {
            using var fp32 = RandomModel(config, seed: 1);
            using var bf16 = new T5EncoderModel(config, ParameterFactory.Cpu(ScalarType.BFloat16));
            CopyWeights(fp32, bf16);
            using var ids = randint(0, config.VocabSize, [1, tokens], dtype: ScalarType.Int64, generator: new Generator(2));

            void Forward(T5EncoderModel m)
            {
                using var scope = NewDisposeScope();
                using var _ = inference_mode();
                m.forward(ids);
            }
            var ms = Measure.InterleavedMedianMs([() => Forward(fp32), () => Forward(bf16)], rounds);

            using var scope = NewDisposeScope();
            var reference = fp32.forward(ids);
            var diff = (bf16.forward(ids).to(ScalarType.Float32) - reference).abs().max().item<float>();
            long parameters = fp32.parameters().Sum(p => p.numel());
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {name} | {parameters / 1e6:F2} M | {ms[0]:F1} | {ms[1]:F1} | {ms[1] / ms[0]:F2} | {diff:G3} ({reference.abs().max().item<float>():G3}) |"));
        }
    }

    /// <summary>Random weights with transformers' T5 initialisation scales (so attention is neither flat nor one-hot).</summary>
    private static T5EncoderModel RandomModel(T5EncoderConfig c, int seed)
    {
        var model = new T5EncoderModel(c, ParameterFactory.Cpu());
        var g = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            using var scope = NewDisposeScope();
            var r = randn(p.shape, generator: g);
            double std = name switch
            {
                _ when name.EndsWith("layer_norm.weight", StringComparison.Ordinal) => 0,
                _ when name.EndsWith(".q.weight", StringComparison.Ordinal) => Math.Pow(c.DModel * c.DKv, -0.5),
                _ when name.EndsWith(".o.weight", StringComparison.Ordinal) => Math.Pow(c.InnerDim, -0.5),
                _ when name.EndsWith(".wo.weight", StringComparison.Ordinal) => Math.Pow(c.DFf, -0.5),
                _ when name.EndsWith("relative_attention_bias.weight", StringComparison.Ordinal) => Math.Pow(c.DModel, -0.5),
                _ when name.StartsWith("shared", StringComparison.Ordinal) => 1.0,
                _ => Math.Pow(c.DModel, -0.5),
            };
            p.copy_(std == 0 ? ones_like(r) : r * std);
        }
        return model;
    }

    private static void CopyWeights(nn.Module from, nn.Module to)
    {
        var target = to.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using var _ = no_grad();
        foreach (var (name, p) in from.named_parameters()) target[name].copy_(p);
    }

    // bf16 matmuls are fast only with avx512_bf16 / AMX; without them libtorch falls back to a slow path.
    private static string CpuBf16Flags()
    {
        if (!File.Exists("/proc/cpuinfo")) return "unknown";
        var flags = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal))?.Split(' ') ?? [];
        var found = flags.Where(f => f is "avx512_bf16" or "amx_bf16" or "avx512f").ToList();
        return found.Count == 0 ? "none (no avx512f / avx512_bf16 / amx_bf16)" : string.Join(" ", found);
    }

    private static double Option(string[] args, string name, double fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? double.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
    }
}
