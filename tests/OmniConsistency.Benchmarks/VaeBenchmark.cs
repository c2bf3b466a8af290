using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.Vae;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Benchmarks;

/// <summary>
/// AutoencoderKL encode (posterior mean) and decode of one 512×512 image, fp32 vs bf16, on the golden tiny VAE and a
/// mid-size random-weight config. Variants run interleaved so machine noise hits all alike; medians in ms.
/// Options: --rounds N (default 3), --size S (default 512).
/// </summary>
public sealed class VaeBenchmark : IBenchmark
{
    public string Name => "vae";
    public string Description => "VAE encode+decode of a 512×512 image: tiny and mid-size configs, fp32 vs bf16";

    public void Run(string[] args)
    {
        int rounds = Option(args, "--rounds", 3), size = Option(args, "--size", 512);
        var tinyFolder = Path.Combine(FindRepositoryRoot(), "tests", "golden", "models", "tiny-flux", "vae");
        var configs = new (string Name, Func<ScalarType, AutoencoderKL> Build)[]
        {
            ("tiny (golden, [8,16,16,16], groups 4)", dtype => AutoencoderKL.FromFolder(tinyFolder, ParameterFactory.Cpu(dtype))),
            ("mid ([32,64,128,128], groups 8, random)", dtype => RandomVae(new VaeConfig
            {
                BlockOutChannels = [32, 64, 128, 128], LayersPerBlock = 2, LatentChannels = 16, NormNumGroups = 8,
                ScalingFactor = 0.3611, ShiftFactor = 0.1159, UseQuantConv = false, UsePostQuantConv = false,
            }, dtype)),
        };

        Console.WriteLine($"torch threads: {get_num_threads()}, image {size}×{size}, batch 1, median of {rounds} interleaved rounds after 1 warm-up");
        Console.WriteLine();
        Console.WriteLine("| config | params | dtype | encode ms | decode ms | encode+decode ms | vs fp32 |");
        Console.WriteLine("|---|---:|---|---:|---:|---:|---:|");
        using var image = rand([1, 3, size, size], generator: new Generator(1)).mul(2).sub(1);
        foreach (var (name, build) in configs)
        {
            using var fp32 = build(ScalarType.Float32);
            using var bf16 = build(ScalarType.BFloat16);
            if (name.StartsWith("mid", StringComparison.Ordinal)) CopyWeights(fp32, bf16);
            long parameters = fp32.parameters().Sum(p => p.numel());
            var models = new[] { fp32, bf16 };
            using var latents = Encode(fp32, image);
            var encode = Measure.InterleavedMedianMs(models.Select(m => (Action)(() => Encode(m, image).Dispose())).ToList(), rounds);
            var decode = Measure.InterleavedMedianMs(models.Select(m => (Action)(() => Decode(m, latents))).ToList(), rounds);
            for (int i = 0; i < models.Length; i++)
            {
                double total = encode[i] + decode[i], baseline = encode[0] + decode[0];
                Console.WriteLine($"| {name} | {parameters:N0} | {(i == 0 ? "fp32" : "bf16")} | {encode[i]:F1} | {decode[i]:F1} | {total:F1} | {total / baseline:F2}× |");
            }
        }
        Console.WriteLine();
        Console.WriteLine($"peak RSS {Measure.PeakRssBytes() / (1024.0 * 1024):F0} MB");
    }

    private static Tensor Encode(AutoencoderKL vae, Tensor image)
    {
        using var posterior = vae.Encode(image);
        return posterior.Mean.to(ScalarType.Float32, copy: true);
    }

    private static void Decode(AutoencoderKL vae, Tensor latents)
    {
        using var scope = NewDisposeScope();
        vae.Decode(latents);
    }

    /// <summary>A model with weights of the usual magnitudes (fan-in scaled uniform, norm scales near 1), seed fixed.</summary>
    private static AutoencoderKL RandomVae(VaeConfig config, ScalarType dtype)
    {
        var vae = new AutoencoderKL(config, ParameterFactory.Cpu(dtype));
        using var noGrad = no_grad();
        var g = new Generator(123);
        foreach (var (name, p) in vae.named_parameters())
        {
            using var scope = NewDisposeScope();
            var r = rand(p.shape, generator: g).mul(2).sub(1);
            long fanIn = p.dim() > 1 ? p.shape.Skip(1).Aggregate(1L, (a, b) => a * b) : 1;
            bool normScale = name.EndsWith(".weight", StringComparison.Ordinal) && p.dim() == 1;
            p.copy_(normScale ? r.mul(0.25).add(1) : p.dim() > 1 ? r.div(Math.Sqrt(fanIn)) : r.mul(0.1));
        }
        return vae;
    }

    private static void CopyWeights(AutoencoderKL from, AutoencoderKL to)
    {
        using var noGrad = no_grad();
        var target = to.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in from.named_parameters()) target[name].copy_(p);
    }

    private static int Option(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length && int.TryParse(args[i + 1], out var v) ? v : fallback;
    }

    private static string FindRepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "OmniConsistency.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("OmniConsistency.sln not found above " + AppContext.BaseDirectory);
    }
}
