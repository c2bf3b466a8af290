using OmniConsistency.Inference.Nn;

namespace OmniConsistency.Inference.Lora;

/// <summary>How an adapter set is applied to the model for one generation.</summary>
public enum LoraApplication
{
    /// <summary>Run-time adapters on the Linear hook: y = Wx + Σ sᵢ·Bᵢ(Aᵢx). Base weights untouched; attach/detach is free.</summary>
    RunTime,
    /// <summary>W += Σ sᵢ·BᵢAᵢ before the run, exact restore from a copy after. No per-step cost; costs a copy of the affected weights.</summary>
    Merged,
}

/// <summary>
/// The style LoRAs of one generation with their weights (negative allowed) and the global <c>lora_scale</c>
/// (diffusers' <c>joint_attention_kwargs["scale"]</c>). The effective update of a module is
/// Σ over adapters of (weight · lora_scale · module scale) · B(A x)  (FORMAT.md, "Several adapters / scales").
/// Attach it for the generation and dispose the returned scope after: the model is left exactly as before.
/// </summary>
public sealed class LoraAdapterSet
{
    private readonly List<(LoraAdapter Adapter, double Weight)> _entries = [];

    public LoraAdapterSet(double loraScale = 1.0)
    {
        if (!double.IsFinite(loraScale)) throw new ArgumentOutOfRangeException(nameof(loraScale), loraScale, "lora_scale must be finite.");
        LoraScale = loraScale;
    }

    public double LoraScale { get; }
    public IReadOnlyList<(LoraAdapter Adapter, double Weight)> Entries => _entries;
    public bool IsEmpty => _entries.Count == 0;

    public LoraAdapterSet Add(LoraAdapter adapter, double weight = 1.0)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        ObjectDisposedException.ThrowIf(adapter.IsDisposed, adapter);
        if (!double.IsFinite(weight)) throw new ArgumentOutOfRangeException(nameof(weight), weight, "adapter weight must be finite.");
        _entries.Add((adapter, weight));
        return this;
    }

    /// <summary>Attaches run-time adapters to the model's Linear modules; dispose the result to detach.</summary>
    public LoraAttachment Attach(LoraTargetModules transformer, LoraTargetModules? textEncoder = null) =>
        new(Resolve(transformer, textEncoder));

    /// <summary>Merges the adapters into the weights, keeping a copy of every affected weight on
    /// <paramref name="backupDevice"/> (default: the model's device); dispose the result to restore them exactly.</summary>
    public LoraMergeScope Merge(LoraTargetModules transformer, LoraTargetModules? textEncoder = null, TorchSharp.torch.Device? backupDevice = null) =>
        new(Resolve(transformer, textEncoder), backupDevice);

    public IDisposable Apply(LoraApplication mode, LoraTargetModules transformer, LoraTargetModules? textEncoder = null) => mode switch
    {
        LoraApplication.Merged => Merge(transformer, textEncoder),
        _ => Attach(transformer, textEncoder),
    };

    /// <summary>The bytes <see cref="Merge"/> would copy to be able to restore: every adapted weight, once.</summary>
    public long MergeBackupBytes(LoraTargetModules transformer, LoraTargetModules? textEncoder = null)
    {
        var seen = new HashSet<(string, string)>();
        long bytes = 0;
        foreach (var (adapter, weight) in _entries)
        {
            if (weight * LoraScale == 0) continue;
            foreach (var m in adapter.Modules)
            {
                var targets = m.Component == LoraComponent.TextEncoder ? textEncoder : transformer;
                if (targets is null || !targets.TryGet(m.Target, out var linear) || !seen.Add((m.Component, m.Target))) continue;
                bytes += linear.InFeatures * linear.OutFeatures * ElementSize(adapter.DType);
            }
        }
        return bytes;
    }

    private static int ElementSize(TorchSharp.torch.ScalarType t) => t switch
    {
        TorchSharp.torch.ScalarType.Float64 => 8,
        TorchSharp.torch.ScalarType.Float32 => 4,
        _ => 2,
    };

    /// <summary>One term of a module's update: factor · (B (A x) + bias).</summary>
    internal sealed record Term(TorchSharp.torch.Tensor A, TorchSharp.torch.Tensor B, TorchSharp.torch.Tensor? Bias, double Factor);

    /// <summary>Every affected Linear with its terms, validated against the model (names, shapes, dtype, device).</summary>
    internal List<(string Name, Linear Linear, List<Term> Terms)> Resolve(LoraTargetModules transformer, LoraTargetModules? textEncoder)
    {
        var byModule = new Dictionary<(string, string), (Linear Linear, List<Term> Terms)>();
        var order = new List<(string, string)>();
        var problems = new List<string>();
        foreach (var (adapter, weight) in _entries)
        {
            ObjectDisposedException.ThrowIf(adapter.IsDisposed, adapter);
            // dtype and device are checked once per adapter and component (all its tensors share them).
            foreach (var component in adapter.Modules.Select(m => m.Component).Distinct())
            {
                var t = component == LoraComponent.TextEncoder ? textEncoder : transformer;
                if (t is null)
                    problems.Add($"{adapter.Source}: has {component} modules but no {component} was given to attach to");
                else if (adapter.DType != t.DType || adapter.Device.type != t.Device.type || adapter.Device.index != t.Device.index)
                    problems.Add($"{adapter.Source}: adapter is {adapter.DType} on {adapter.Device} but the {component} is {t.DType} on {t.Device}");
            }
            if (problems.Count > 0) continue;
            foreach (var m in adapter.Modules)
            {
                var targets = m.Component == LoraComponent.TextEncoder ? textEncoder! : transformer;
                if (!targets.TryGet(m.Target, out var linear))
                {
                    problems.Add($"{adapter.Source}: {m.Target} is not a Linear of the model");
                    continue;
                }
                if (m.In != linear.InFeatures || m.Out != linear.OutFeatures)
                {
                    problems.Add($"{adapter.Source}: {m.Target} is [{linear.OutFeatures},{linear.InFeatures}] but the adapter is [{m.Out},{m.In}]");
                    continue;
                }
                double factor = weight * LoraScale * m.Scale;
                // A zero factor adds exactly nothing (peft would compute it and multiply by 0).
                if (factor == 0) continue;
                var key = (m.Component, m.Target);
                if (!byModule.TryGetValue(key, out var entry))
                {
                    byModule[key] = entry = (linear, []);
                    order.Add(key);
                }
                entry.Terms.Add(new Term(m.A, m.B, m.BBias, factor));
            }
        }
        if (problems.Count > 0)
            throw new InvalidOperationException($"The adapter set does not fit the model ({problems.Count} problem(s)):\n  " + string.Join("\n  ", problems.Distinct().Take(20)));
        return order.Select(k => ($"{k.Item1}:{k.Item2}", byModule[k].Linear, byModule[k].Terms)).ToList();
    }
}
