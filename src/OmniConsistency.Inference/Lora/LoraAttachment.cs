using OmniConsistency.Inference.Nn;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace OmniConsistency.Inference.Lora;

/// <summary>
/// Run-time adapters attached to a model's Linear modules for one generation. Attaching only sets references (no
/// tensor is copied or computed), so a style switch costs microseconds; disposing detaches them and the model computes
/// exactly its base function again. One attachment per model at a time.
/// </summary>
public sealed class LoraAttachment : IDisposable
{
    private readonly List<(Linear Linear, RunTimeLoraAdapter Adapter)> _attached = [];
    private bool _disposed;

    internal LoraAttachment(List<(string Name, Linear Linear, List<LoraAdapterSet.Term> Terms)> modules)
    {
        foreach (var (name, linear, _) in modules)
            if (linear.Adapter is not null)
                throw new InvalidOperationException($"{name} already has an adapter attached: detach the previous adapter set first (one generation per model at a time).");
        foreach (var (_, linear, terms) in modules)
        {
            var adapter = new RunTimeLoraAdapter(terms);
            linear.Adapter = adapter;
            _attached.Add((linear, adapter));
        }
    }

    /// <summary>Number of Linear modules that carry an adapter.</summary>
    public int ModuleCount => _attached.Count;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var (linear, adapter) in _attached)
        {
            if (ReferenceEquals(linear.Adapter, adapter)) linear.Adapter = null;
            adapter.Dispose();
        }
        _attached.Clear();
    }
}

/// <summary>Δ(x) = Σ factorᵢ · (Bᵢ (Aᵢ x) + biasᵢ), in the adapters' (= the model's) dtype.</summary>
internal sealed class RunTimeLoraAdapter : ILinearAdapter, IDisposable
{
    private readonly (Tensor A, Tensor B, Tensor? Bias, double Factor)[] _terms;
    private readonly List<Tensor> _scaledBiases = [];

    public RunTimeLoraAdapter(List<LoraAdapterSet.Term> terms)
    {
        _terms = new (Tensor, Tensor, Tensor?, double)[terms.Count];
        for (int i = 0; i < terms.Count; i++)
        {
            var t = terms[i];
            Tensor? bias = null;
            if (t.Bias is not null)
            {
                // factor·(B h + b) = B (factor·h) + factor·b: the factor is applied to the rank-r intermediate, which is
                // far smaller than the output, so the bias is pre-scaled once here.
                bias = t.Bias.mul(t.Factor).DetachFromDisposeScope();
                _scaledBiases.Add(bias);
            }
            _terms[i] = (t.A, t.B, bias, t.Factor);
        }
    }

    public Tensor? Delta(Tensor input)
    {
        Tensor? sum = null;
        foreach (var (a, b, bias, factor) in _terms)
        {
            var x = input.dtype == a.dtype ? input : input.to(a.dtype);
            var h = F.linear(x, a);
            if (factor != 1.0) h.mul_(factor);
            var d = F.linear(h, b, bias);
            sum = sum is null ? d : sum.add_(d);
        }
        return sum;
    }

    public void Dispose()
    {
        foreach (var t in _scaledBiases) t.Dispose();
        _scaledBiases.Clear();
    }
}
