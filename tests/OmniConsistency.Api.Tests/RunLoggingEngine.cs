using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// A real engine (the built-in tiny model in the multi-process test) with the same run log as <see cref="TestEngine"/>
/// ("start|done seed pid" lines in runs-&lt;pid&gt;.log) and an optional pause after each reported step, so a test can
/// make one worker slow enough to be killed mid-job. Everything else is the wrapped engine's.
/// </summary>
public sealed class RunLoggingEngine(IStylizationEngine inner, TimeSpan stepPause, string? runLogDirectory) : IStylizationEngine
{
    private readonly Lock _logLock = new();

    public EngineInfo Info => inner.Info;
    public IReadOnlyList<StyleInfo> Styles => inner.Styles;
    public void Validate(StylizationRequest request) => inner.Validate(request);

    public async Task<StylizationResult> RunAsync(StylizationRequest request, IProgress<StylizationProgress>? progress, CancellationToken ct)
    {
        Log("start", request.Seed);
        // Reported synchronously on the engine's thread: pausing here slows the generation itself between steps.
        var paused = new SynchronousProgress(p =>
        {
            progress?.Report(p);
            if (stepPause > TimeSpan.Zero) ct.WaitHandle.WaitOne(stepPause);
        });
        var result = await inner.RunAsync(request, paused, ct);
        Log("done", request.Seed);
        return result;
    }

    private void Log(string what, long seed)
    {
        if (runLogDirectory is null) return;
        lock (_logLock) File.AppendAllText(Path.Combine(runLogDirectory, $"runs-{Environment.ProcessId}.log"), $"{what} {seed} {Environment.ProcessId}\n");
    }

    private sealed class SynchronousProgress(Action<StylizationProgress> report) : IProgress<StylizationProgress>
    {
        public void Report(StylizationProgress value) => report(value);
    }
}
