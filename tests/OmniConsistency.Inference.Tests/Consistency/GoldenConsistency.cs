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
        // The consistency LoRA is not a peft adapter: an adapter weight other than 1 has no meaning we could honour.
        if (entry.TryGetProperty("scale", out var scale) && scale.ValueKind == JsonValueKind.Number && scale.GetDouble() != 1.0)
            throw new GoldenCaseNotSupportedException($"consistency LoRA entry with scale {scale.GetDouble()} (only lora_weights scale it)");
        return new GoldenConsistencyLora(c.RootPath(entry.GetProperty("path").GetString()!), weights[0], condSize);
    }

    /// <summary>
    /// The condition-token count upstream's processors use for a cond_size: <c>cond_w//8 * cond_h//8 * 16 // 64</c>,
    /// left to right. It equals (cond_size/16)² only for suitable sizes (quirk Q13); the C# branch takes the count from
    /// the condition latents instead, so a case is only reproduced where both agree.
    /// </summary>
    public static long UpstreamConditionTokens(int condSize) => (long)condSize / 8 * condSize / 8 * 16 / 64;

    /// <summary>
    /// Fails loudly unless <c>params.cond_size</c> and the consistency entry's <c>cond_size</c> agree with each other and
    /// with the <paramref name="conditionTokens"/> the case's condition latents hold.
    /// </summary>
    public static void RequireConditionTokens(GoldenCase c, GoldenConsistencyLora? lora, long conditionTokens)
    {
        int? callSize = c.Params.TryGetProperty("cond_size", out var p) && p.ValueKind == JsonValueKind.Number ? p.GetInt32() : null;
        if (callSize is int a && lora?.CondSize is int b && a != b)
            throw new InvalidOperationException($"params.cond_size {a} differs from the consistency LoRA's cond_size {b}");
        foreach (var size in new[] { callSize, lora?.CondSize })
            if (size is int s && UpstreamConditionTokens(s) != conditionTokens)
                throw new InvalidOperationException($"cond_size {s} gives upstream {UpstreamConditionTokens(s)} condition tokens but the case has {conditionTokens}");
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

/// <summary>Checks of case.json parameters that the runners take from the tensors instead: they must agree, loudly.</summary>
public static class GoldenParamChecks
{
    /// <summary>Throws when <c>params.&lt;name&gt;</c> is a number other than <paramref name="actual"/>.</summary>
    public static void RequireEqual(GoldenCase c, string name, long actual)
    {
        if (c.Params.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.GetInt64() != actual)
            throw new InvalidOperationException($"params.{name} is {v.GetInt64()} but the case's tensors give {actual}");
    }

    /// <summary>Throws unless params height × width give <paramref name="tokens"/> packed noise tokens.</summary>
    public static void RequireImageTokens(GoldenCase c, long tokens)
    {
        if (!c.Params.TryGetProperty("height", out var h) || !c.Params.TryGetProperty("width", out var w)) return;
        long expected = (long)(h.GetInt32() / 16) * (w.GetInt32() / 16);
        if (expected != tokens)
            throw new InvalidOperationException($"params height {h.GetInt32()} × width {w.GetInt32()} give {expected} noise tokens but the case has {tokens}");
    }
}
