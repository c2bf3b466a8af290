using System.Text.Json;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.Tests.Golden;

namespace OmniConsistency.Inference.Tests.Flux;

/// <summary>Loads the transformer a golden case names: a diffusers folder, or a single file with "model_config".</summary>
public static class GoldenFluxModels
{
    public static FluxTransformer2DModel LoadTransformer(GoldenCase c, ParameterFactory? factory = null)
    {
        factory ??= ParameterFactory.Cpu();
        if (c.Json.TryGetProperty("model_config", out var cfg) && cfg.ValueKind == JsonValueKind.String)
            return FluxTransformerLoader.FromSingleFile(c.ModelPath, FluxTransformerConfig.FromJsonFile(c.RootPath(cfg.GetString()!)), factory);
        return FluxTransformerLoader.FromDiffusersFolder(c.ModelPath, factory);
    }

    public static bool DebugRequested(GoldenCase c) =>
        c.Params.TryGetProperty("debug", out var d) && d.ValueKind == JsonValueKind.True;
}
