using static TorchSharp.torch;

namespace OmniConsistency.Inference.Flux;

/// <summary>
/// Collects named intermediates as detached copies that it owns (outside every dispose scope) until disposed.
/// Pass <see cref="Sink"/> as <see cref="FluxForwardContext.Capture"/>; a later tensor of the same name replaces the earlier one.
/// </summary>
public sealed class TensorCapture : IDisposable
{
    private readonly Dictionary<string, Tensor> _tensors = new(StringComparer.Ordinal);
    private readonly string _prefix;

    /// <param name="prefix">Prepended to every name (e.g. "debug.").</param>
    public TensorCapture(string prefix = "")
    {
        _prefix = prefix;
        Sink = Add;
    }

    public Action<string, Tensor> Sink { get; }

    public IReadOnlyDictionary<string, Tensor> Tensors => _tensors;

    private void Add(string name, Tensor t)
    {
        var copy = t.detach().clone().DetachFromDisposeScope();
        if (_tensors.Remove(_prefix + name, out var old)) old.Dispose();
        _tensors[_prefix + name] = copy;
    }

    public void Dispose()
    {
        foreach (var t in _tensors.Values) t.Dispose();
        _tensors.Clear();
    }
}
