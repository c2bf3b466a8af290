using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Engine;

public static class EngineRegistration
{
    /// <summary>
    /// THE extension point for the stylization engine. Register exactly one <see cref="IStylizationEngine"/>
    /// singleton here, built from configuration (e.g. an "Omni:Engine" section: model paths, device, dtype, LoRA
    /// folder; with nothing configured, the built-in tiny model). The service resolves it once, off the start-up
    /// path (<see cref="EngineHost"/>), so a slow model load does not delay /healthz; until it has loaded, /readyz
    /// answers 503 and submissions get 503 engine-unavailable. A constructor that throws is reported the same way,
    /// with its message.
    ///
    /// Nothing is registered yet: the real StylizationPipeline is wired here by the lead. Tests register their own
    /// engine after calling this, which wins because the last registration is the one resolved.
    /// </summary>
    public static IServiceCollection AddStylizationEngine(this IServiceCollection services, IConfiguration configuration)
    {
        _ = configuration;
        return services;
    }
}
