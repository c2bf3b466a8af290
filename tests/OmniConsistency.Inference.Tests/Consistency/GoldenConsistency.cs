using System.Text.Json;
using OmniConsistency.Inference.Consistency;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Tests.Golden;

namespace OmniConsistency.Inference.Tests.Consistency;

/// <summary>The consistency LoRA entry of a golden case (role "consistency").</summary>
public sealed record GoldenConsistencyLora(string Path, double Weight, int? CondSize)
{
    public static GoldenConsistencyLora? From(GoldenCase c)
    {
        var entry = c.Loras.FirstOrDefault(l => l.TryGetProperty("role", out var r) && r.GetString() == "consistency");
        if (entry.ValueKind != JsonValueKind.Object) return null;
        var weights = entry.TryGetProperty("lora_weights", out var w) ? w.EnumerateArray().Select(e => e.GetDouble()).ToList() : [1.0];
        if (weights.Count != 1) throw new GoldenCaseNotSupportedException($"{weights.Count} condition LoRAs (n_loras > 1) are not supported");
        int? condSize = entry.TryGetProperty("cond_size", out var cs) ? cs.GetInt32() : null;
        return new GoldenConsistencyLora(c.RootPath(entry.GetProperty("path").GetString()!), weights[0], condSize);
    }

    public ConsistencyLora Load(FluxTransformer2DModel model) => ConsistencyLora.Load(Path, model.Config, model.Device);
}

/// <summary>
/// The style LoRAs of a golden case (role "style"), loaded for one model and attached as run-time adapters: each at its
/// adapter weight <c>scale</c>, all under <c>params.lora_scale</c> (joint_attention_kwargs, applied on every transformer
/// call including the warm-up, so the style LoRA also acts on the condition tokens there: quirk Q20). The consistency
/// LoRA's weight is not scaled. Dispose to detach and free the adapters.
/// </summary>
public sealed class GoldenStyleLoras : IDisposable
{
    private readonly List<LoraAdapter> _adapters = [];
    private IDisposable? _applied;

    private GoldenStyleLoras() { }

    public int Count => _adapters.Count;

    public static GoldenStyleLoras Attach(GoldenCase c, FluxTransformer2DModel model, LoraApplication mode = LoraApplication.RunTime)
    {
        var result = new GoldenStyleLoras();
        try
        {
            var targets = new LoraTargetModules(model);
            double loraScale = c.Params.TryGetProperty("lora_scale", out var ls) && ls.ValueKind == JsonValueKind.Number ? ls.GetDouble() : 1.0;
            var set = new LoraAdapterSet(loraScale);
            foreach (var entry in c.Loras.Where(l => (l.TryGetProperty("role", out var r) ? r.GetString() : "style") == "style"))
            {
                var adapter = LoraLoader.Load(c.RootPath(entry.GetProperty("path").GetString()!), new LoraModelTargets(targets.Shapes), model.DType, model.Device);
                result._adapters.Add(adapter);
                set.Add(adapter, entry.TryGetProperty("scale", out var s) && s.ValueKind == JsonValueKind.Number ? s.GetDouble() : 1.0);
            }
            if (!set.IsEmpty) result._applied = set.Apply(mode, targets);
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        _applied?.Dispose();
        _applied = null;
        foreach (var a in _adapters) a.Dispose();
        _adapters.Clear();
    }
}
