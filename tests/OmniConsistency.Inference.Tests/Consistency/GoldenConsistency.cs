using System.Text.Json;
using OmniConsistency.Inference.Consistency;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.Tests.Golden;

namespace OmniConsistency.Inference.Tests.Consistency;

/// <summary>The consistency LoRA entry of a golden case (role "consistency").</summary>
public sealed record GoldenConsistencyLora(string Path, double Weight, int? CondSize)
{
    public static GoldenConsistencyLora? From(GoldenCase c)
    {
        if (c.Loras.Any(l => l.TryGetProperty("role", out var r) && r.GetString() == "style"))
            throw new GoldenCaseNotSupportedException("needs style LoRA support (issue: Style LoRAs)");
        var entry = c.Loras.FirstOrDefault(l => l.TryGetProperty("role", out var r) && r.GetString() == "consistency");
        if (entry.ValueKind != JsonValueKind.Object) return null;
        var weights = entry.TryGetProperty("lora_weights", out var w) ? w.EnumerateArray().Select(e => e.GetDouble()).ToList() : [1.0];
        if (weights.Count != 1) throw new GoldenCaseNotSupportedException($"{weights.Count} condition LoRAs (n_loras > 1) are not supported");
        int? condSize = entry.TryGetProperty("cond_size", out var cs) ? cs.GetInt32() : null;
        return new GoldenConsistencyLora(c.RootPath(entry.GetProperty("path").GetString()!), weights[0], condSize);
    }

    public ConsistencyLora Load(FluxTransformer2DModel model) => ConsistencyLora.Load(Path, model.Config, model.Device);
}
