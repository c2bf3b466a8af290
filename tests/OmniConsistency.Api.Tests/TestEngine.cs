using System.Collections.Concurrent;
using System.Diagnostics;
using OmniConsistency.Inference.Pipelines;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Webp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// A deterministic engine for HTTP tests: it decodes the photo, resizes it to the output size and mixes in the
/// seed, reporting one progress event per step and honouring cancellation between steps. It can be told to be
/// slow, to fail (prompt containing "fail"), to wait at a gate, or to freeze ignoring cancellation (a dead process).
/// </summary>
public sealed class TestEngine : IStylizationEngine
{
    // Plays the LoRA cache's counters, which the service exports from any "OmniConsistency.*" meter.
    private static readonly System.Diagnostics.Metrics.Meter Meter = new("OmniConsistency.Inference.Test");
    private static readonly System.Diagnostics.Metrics.Counter<long> LoraHits = Meter.CreateCounter<long>("test_lora_cache_hits");

    public TimeSpan StepDelay { get; set; } = TimeSpan.FromMilliseconds(5);

    /// <summary>Never finishes and ignores cancellation, like a process that died mid-job.</summary>
    public bool Freeze { get; set; }

    /// <summary>Completed when a run starts (set a fresh one per expectation).</summary>
    public TaskCompletionSource<StylizationRequest> RunStarted { get; set; } = NewSignal<StylizationRequest>();

    /// <summary>When set, every step waits for it (after reporting step 1) — a job held "running".</summary>
    public TaskCompletionSource? Gate { get; set; }

    /// <summary>When set, every run appends "start|done seed pid" lines to runs-&lt;pid&gt;.log there (multi-process tests).</summary>
    public string? RunLogDirectory { get; set; }
    private readonly Lock _logLock = new();

    public ConcurrentDictionary<long, int> RunsBySeed { get; } = new();
    public ConcurrentDictionary<long, int> CompletedBySeed { get; } = new();
    private int _runs;
    public int Runs => _runs;

    public EngineInfo Info { get; } = new("test-engine", BuiltIn: true, Device: "cpu", DType: "float32", MaxSide: 1024, MaxCondSize: 1024);

    public IReadOnlyList<StyleInfo> Styles { get; init; } =
    [
        new("demo", "Demo", ["demo style"], 1.0, "A test style."),
        new("ghibli", "Ghibli", ["Studio Ghibli style", "anime"], 0.8, null),
    ];

    public static TaskCompletionSource<T> NewSignal<T>() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    public void Validate(StylizationRequest request)
    {
        foreach (var s in request.Styles)
            if (!Styles.Any(x => x.Name == s.Name)) throw new StylizationRequestException("unknown-style", $"Unknown style '{s.Name}'.");
        if (request.Width is { } w && (w % 16 != 0 || w > Info.MaxSide)) throw new StylizationRequestException("invalid-size", $"Bad width {w}.");
        if (request.Height is { } h && (h % 16 != 0 || h > Info.MaxSide)) throw new StylizationRequestException("invalid-size", $"Bad height {h}.");
    }

    public async Task<StylizationResult> RunAsync(StylizationRequest request, IProgress<StylizationProgress>? progress, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        Interlocked.Increment(ref _runs);
        RunsBySeed.AddOrUpdate(request.Seed, 1, (_, n) => n + 1);
        LogRun("start", request.Seed);
        RunStarted.TrySetResult(request);
        LoraHits.Add(request.Styles.Count + 1);
        if (Freeze) await Task.Delay(Timeout.Infinite, CancellationToken.None);

        using var image = Image.Load<Rgb24>(request.Image);
        if (request.Prompt?.Contains("fail", StringComparison.OrdinalIgnoreCase) == true)
            throw new InvalidOperationException("Simulated engine failure: CUDA out of memory.");

        for (var step = 1; step <= request.Steps; step++)
        {
            ct.ThrowIfCancellationRequested();
            await Task.Delay(StepDelay, ct);
            progress?.Report(new StylizationProgress("denoise", step, request.Steps));
            if (Gate is { } gate) await gate.Task.WaitAsync(ct);
        }
        ct.ThrowIfCancellationRequested();

        // Default size: the photo's aspect at a small area (this is a test engine, not the 1 MP model).
        var (width, height) = (request.Width, request.Height) switch
        {
            ({ } w, { } h) => (w, h),
            _ => DefaultSize(image.Width, image.Height),
        };
        image.Mutate(x => x.Resize(width, height));
        var salt = (byte)(request.Seed * 31 + request.Styles.Count * 7);
        image.ProcessPixelRows(rows =>
        {
            for (var y = 0; y < rows.Height; y++)
                foreach (ref var p in rows.GetRowSpan(y))
                    p = new Rgb24((byte)(255 - p.R), (byte)(p.G ^ salt), p.B);
        });
        using var output = new MemoryStream();
        var contentType = request.OutputFormat switch
        {
            ImageOutputFormat.Jpeg => Save(image, output, new JpegEncoder(), "image/jpeg"),
            ImageOutputFormat.Webp => Save(image, output, new WebpEncoder(), "image/webp"),
            _ => Save(image, output, new PngEncoder(), "image/png"),
        };
        CompletedBySeed.AddOrUpdate(request.Seed, 1, (_, n) => n + 1);
        LogRun("done", request.Seed);
        var prompt = string.Join(", ", request.Styles.SelectMany(s => Styles.First(x => x.Name == s.Name).TriggerWords).Append(request.Prompt ?? "").Where(x => x != ""));
        return new StylizationResult(output.ToArray(), contentType, width, height, request.Seed, prompt, [], clock.Elapsed);
    }

    private void LogRun(string what, long seed)
    {
        if (RunLogDirectory is null) return;
        lock (_logLock) File.AppendAllText(Path.Combine(RunLogDirectory, $"runs-{Environment.ProcessId}.log"), $"{what} {seed} {Environment.ProcessId}\n");
    }

    private static string Save(Image image, Stream s, SixLabors.ImageSharp.Formats.IImageEncoder encoder, string contentType)
    {
        image.Save(s, encoder);
        return contentType;
    }

    private static (int, int) DefaultSize(int w, int h)
    {
        var scale = Math.Sqrt(128.0 * 128.0 / (w * (double)h));
        return (Math.Max(16, (int)Math.Round(w * scale / 16) * 16), Math.Max(16, (int)Math.Round(h * scale / 16) * 16));
    }
}
