using System.Globalization;
using OmniConsistency.Inference.BuiltIn;
using OmniConsistency.Inference.Pipelines;
using static TorchSharp.torch;

namespace OmniConsistency.Benchmarks;

/// <summary>
/// A generation's prompt-encoding stage (tokenize CLIP + T5, encode, convert to the transformer's dtype/device) on the
/// built-in model, exactly as the pipelines run it: cache off, cache miss (a new prompt each time) and cache hit, in
/// one run, interleaved. Also what the lease saves over handing out clones: a clone of FLUX's prompt_embeds
/// [1, 512, 4096] in fp32 and bf16. Options: --rounds N (default 21), --data DIR, --threads N.
/// </summary>
public sealed class PromptCacheBenchmark : IBenchmark
{
    public string Name => "prompt-cache";
    public string Description => "prompt-encoding stage on the built-in model: cache off / miss / hit (ms, ratio) and the clone a lease avoids";

    public void Run(string[] args)
    {
        int rounds = int.Parse(Text(args, "--rounds") ?? "21", CultureInfo.InvariantCulture);
        if (Text(args, "--threads") is { } threads) set_num_threads(int.Parse(threads, CultureInfo.InvariantCulture));
        var data = Text(args, "--data") ?? Path.Combine(Path.GetTempPath(), "omniconsistency-data");
        var load = File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "?";
        Console.WriteLine($"torch threads {get_num_threads()}, {Environment.ProcessorCount} cores, load average {load}; median of {rounds} interleaved rounds after 1 warm-up");

        var paths = BuiltInModel.EnsureCreated(data);
        using var models = FluxModelSet.Load(paths.ModelSetOptions("cpu"));
        using var cache = new PromptEmbeddingCache(64L << 20);
        const string prompt = "demo style, a lighthouse on a cliff at sunset";
        int unique = 0;
        void Stage(PromptEmbeddingCache? c, string text)
        {
            using var scope = NewDisposeScope();
            var inputs = new FluxGenerationInputs { Prompt = text, Width = 1024, Height = 1024 };
            using var lease = FluxPipelineStages.EncodePrompt(models, c, inputs, null, CancellationToken.None, null);
        }
        var ms = Measure.InterleavedMedianMs(
        [
            () => Stage(null, prompt),
            () => Stage(cache, $"{prompt} #{unique++}"),
            () => Stage(cache, prompt),
        ], rounds);
        var m = cache.Metrics;
        Console.WriteLine();
        Console.WriteLine("| prompt-encoding stage (built-in model, fp32 CPU) | ms | vs cache off |");
        Console.WriteLine("|---|---:|---:|");
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| cache off | {ms[0]:F3} | 1 |"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| cache miss (encode + store) | {ms[1]:F3} | {ms[1] / ms[0]:F2} |"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| cache hit | {ms[2]:F4} | {ms[2] / ms[0]:F4} (miss / hit = {ms[1] / ms[2]:F0}×) |"));
        Console.WriteLine($"cache: {m.Hits} hits, {m.Misses} misses, {m.Entries} entries, {m.Bytes} bytes");

        Console.WriteLine();
        Console.WriteLine("| clone of prompt_embeds [1, 512, 4096] (what a lease avoids per generation) | ms |");
        Console.WriteLine("|---|---:|");
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            using var embeds = randn([1, 512, 4096]).to(dtype);
            double clone = Measure.MedianMs(() =>
            {
                using var copy = embeds.clone();
            }, rounds);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {dtype} ({embeds.numel() * embeds.ElementSize >> 20} MiB) | {clone:F3} |"));
        }
    }

    private static string? Text(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
