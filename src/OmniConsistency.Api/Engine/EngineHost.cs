using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Engine;

public enum EngineState { Loading, Ready, Missing, Failed }

/// <summary>Owns the one engine instance: loads it in the background at start and tells whether it is ready.</summary>
public sealed class EngineHost(IServiceProvider services, ILogger<EngineHost> logger) : BackgroundService
{
    private readonly TaskCompletionSource<IStylizationEngine?> _loaded = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public EngineState State { get; private set; } = EngineState.Loading;
    public string? FailureReason { get; private set; }
    public IStylizationEngine? Engine { get; private set; }

    /// <summary>Completes with the engine, or null when none is configured or it failed to load.</summary>
    public Task<IStylizationEngine?> Loaded => _loaded.Task;

    protected override Task ExecuteAsync(CancellationToken stoppingToken) => Task.Run(() =>
    {
        try
        {
            var engine = services.GetService<IStylizationEngine>();
            if (engine is null)
            {
                State = EngineState.Missing;
                FailureReason = "No stylization engine is registered (see Engine/EngineRegistration.cs).";
                logger.LogError("No stylization engine is registered: the service accepts no jobs and /readyz reports not ready");
                _loaded.TrySetResult(null);
                return;
            }
            Engine = engine;
            State = EngineState.Ready;
            var info = engine.Info;
            logger.LogInformation("Engine ready: {Model} (built-in: {BuiltIn}) on {Device} {DType}, {StyleCount} styles",
                info.ModelName, info.BuiltIn, info.Device, info.DType, engine.Styles.Count);
            _loaded.TrySetResult(engine);
        }
        catch (Exception ex)
        {
            State = EngineState.Failed;
            FailureReason = $"{ex.GetType().Name}: {ex.Message}";
            logger.LogError(ex, "The stylization engine failed to load");
            _loaded.TrySetResult(null);
        }
    }, stoppingToken);
}
