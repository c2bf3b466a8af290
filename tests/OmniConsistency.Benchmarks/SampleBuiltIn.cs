using System.Diagnostics;
using OmniConsistency.Inference.BuiltIn;
using OmniConsistency.Inference.Imaging;
using OmniConsistency.Inference.Pipelines;
using static TorchSharp.torch;

namespace OmniConsistency.Benchmarks;

/// <summary>
/// The README sample: creates the built-in random-weight model (if needed) and runs the plain FLUX text-to-image
/// pipeline on it, or, with --photo, an OmniConsistency stylization through the engine; writes the image and prints
/// the time of each stage. The weights are random, so the picture is noise-like: that is expected.
/// Usage: sample-builtin [out.png] [--data DIR] [--size WxH] [--steps N] [--seed S] [--prompt TEXT] [--photo in.png [--style NAME]]
/// </summary>
public sealed class SampleBuiltIn : IBenchmark
{
    public string Name => "sample-builtin";
    public string Description => "write a PNG from the built-in random-weight model (plain text-to-image, or --photo for a stylization) with stage timings";

    public void Run(string[] args)
    {
        var output = args.Length > 0 && !args[0].StartsWith("--", StringComparison.Ordinal) ? args[0] : "builtin-sample.png";
        var data = Text(args, "--data") ?? Path.Combine(Path.GetTempPath(), "omniconsistency-data");
        var (width, height) = Size(Text(args, "--size") ?? "1024x1024");
        int steps = int.Parse(Text(args, "--steps") ?? "25");
        long seed = long.Parse(Text(args, "--seed") ?? "42");
        var prompt = Text(args, "--prompt") ?? "a lighthouse on a cliff at sunset";
        var photo = Text(args, "--photo");
        Console.WriteLine($"torch threads: {get_num_threads()}; {width}×{height}, {steps} steps, seed {seed}");

        var sw = Stopwatch.StartNew();
        var paths = BuiltInModel.EnsureCreated(data);
        Console.WriteLine($"built-in model ready at {paths.Root} in {sw.ElapsedMilliseconds} ms");

        if (photo is not null)
        {
            RunEngine(data, photo, output, width, height, steps, seed, prompt, Text(args, "--style"));
            return;
        }

        sw.Restart();
        using var models = FluxModelSet.Load(paths.ModelSetOptions("cpu"));
        Console.WriteLine($"loaded in {sw.ElapsedMilliseconds} ms ({models.Device}, {models.DType})");
        var stages = new StageClock();
        sw.Restart();
        using var noise = GenerationNoise.FromSeed(seed);
        using var result = new FluxTextToImagePipeline(models).Run(
            new FluxGenerationInputs { Prompt = prompt, Width = width, Height = height, Steps = steps }, noise, stages.Report);
        var image = ImageTensors.ToImages(result.Image)[0];
        File.WriteAllBytes(output, new ImageCodec().Encode(image, ImageOutputFormat.Png));
        stages.Finish();
        Console.WriteLine($"total {sw.ElapsedMilliseconds} ms; wrote {output} ({image.Width}×{image.Height}; random weights, so noise-like)");
    }

    private static void RunEngine(string data, string photo, string output, int width, int height, int steps, long seed, string prompt, string? style)
    {
        var sw = Stopwatch.StartNew();
        using var engine = StylizationEngine.Create(new StylizationEngineOptions { DataDirectory = data, Device = "cpu" });
        Console.WriteLine($"engine ready in {sw.ElapsedMilliseconds} ms: {engine.Info}");
        var stages = new StageClock();
        sw.Restart();
        var result = engine.RunAsync(new StylizationRequest
        {
            Image = File.ReadAllBytes(photo),
            Prompt = prompt,
            Styles = style is null ? [] : [new StyleSelection(style)],
            Width = width,
            Height = height,
            Steps = steps,
            Seed = seed,
        }, new SyncProgress(stages.Report), CancellationToken.None).GetAwaiter().GetResult();
        stages.Finish();
        File.WriteAllBytes(output, result.Image);
        Console.WriteLine($"total {sw.ElapsedMilliseconds} ms (inference {result.InferenceTime.TotalMilliseconds:F0} ms); prompt \"{result.EffectivePrompt}\"; wrote {output} ({result.Width}×{result.Height})");
        foreach (var w in result.Warnings) Console.WriteLine($"warning: {w}");
    }

    /// <summary>Prints how long each phase took (denoising: total and per step).</summary>
    private sealed class StageClock
    {
        private readonly Stopwatch _sw = Stopwatch.StartNew();
        private string? _phase;
        private int _steps;

        public void Report(StylizationProgress p)
        {
            if (p.Phase == _phase && p.Phase == GenerationPhases.Denoising)
            {
                _steps = p.Step;
                return;
            }
            Finish();
            _phase = p.Phase;
            _steps = p.Phase == GenerationPhases.Denoising ? p.Step : 0;
        }

        public void Finish()
        {
            if (_phase is null) return;
            var ms = _sw.Elapsed.TotalMilliseconds;
            var perStep = _phase == GenerationPhases.Denoising && _steps > 0 ? $" ({ms / _steps:F0} ms/step over {_steps} steps)" : "";
            Console.WriteLine($"  {_phase,-20} {ms,9:F0} ms{perStep}");
            _phase = null;
            _sw.Restart();
        }
    }

    /// <summary>IProgress that calls back on the reporting thread (Progress&lt;T&gt; would post to the thread pool).</summary>
    private sealed class SyncProgress(Action<StylizationProgress> report) : IProgress<StylizationProgress>
    {
        public void Report(StylizationProgress value) => report(value);
    }

    private static string? Text(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    private static (int Width, int Height) Size(string s)
    {
        var parts = s.Split('x', 'X');
        return (int.Parse(parts[0]), int.Parse(parts[1]));
    }
}
