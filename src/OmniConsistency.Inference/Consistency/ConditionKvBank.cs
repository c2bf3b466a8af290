using OmniConsistency.Inference.Flux;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Consistency;

/// <summary>
/// The condition branch's K/V cache for one generation: per attention layer, the condition tokens' keys (after
/// norm_k and RoPE with the condition ids) and values, [B, heads, C, head_dim], computed once by the warm-up pass
/// (<see cref="ConditionBranch.Warmup"/>). Passed as <see cref="FluxForwardContext.Attention"/> to each denoising
/// step, it appends those K/V to every attention (condition tokens are keys only, never queries).
/// Owned by the generation that created it: dispose it when the generation ends (success, failure or cancel).
/// Storing post-norm/post-RoPE keys is equivalent to upstream, which stores raw keys and re-applies the same
/// per-token norm and rotation at every step (quirk Q11).
/// </summary>
public sealed class ConditionKvBank : IFluxAttentionExtension, IDisposable
{
    private readonly (Tensor Key, Tensor Value)?[] _layers;
    private bool _disposed;

    internal ConditionKvBank(int layers, long batch, long conditionTokens)
    {
        _layers = new (Tensor, Tensor)?[layers];
        Batch = batch;
        ConditionTokens = conditionTokens;
    }

    public int LayerCount => _layers.Length;
    public long Batch { get; }
    public long ConditionTokens { get; }
    public bool IsComplete => _layers.All(l => l is not null);

    /// <summary>Bytes held by the cached tensors.</summary>
    public long ByteSize => _layers.Where(l => l is not null).Sum(l => 2 * l!.Value.Key.NumberOfElements * l.Value.Key.ElementSize);

    /// <summary>The cached (key, value) of one layer; the tensors stay owned by the bank.</summary>
    public (Tensor Key, Tensor Value) Layer(int layer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _layers[layer] ?? throw new InvalidOperationException($"The condition bank has no entry for attention layer {layer}: the warm-up did not complete.");
    }

    /// <summary>Stores copies of <paramref name="key"/> and <paramref name="value"/>, owned by the bank.</summary>
    internal void Store(int layer, Tensor key, Tensor value)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_layers[layer] is not null) throw new InvalidOperationException($"Attention layer {layer} was already stored in this condition bank.");
        _layers[layer] = (OwnedCopy(key), OwnedCopy(value));
    }

    // A contiguous copy outside every dispose scope (slices would pin the whole warm-up K/V, quirk Q10).
    private static Tensor OwnedCopy(Tensor t) => (t.is_contiguous() ? t.detach().clone() : t.detach().contiguous()).DetachFromDisposeScope();

    Tensor IFluxAttentionExtension.AdjustProjection(int layer, QkvProjection which, Tensor input, Tensor projected, long textLength) => projected;

    Tensor? IFluxAttentionExtension.AttentionMask(int layer, long textLength, long queryLength, long keyLength) => null;

    void IFluxAttentionExtension.ObserveImageKeyValue(int layer, Tensor rawKey, Tensor key, Tensor value) { }

    (Tensor Key, Tensor Value)? IFluxAttentionExtension.AppendedKeyValue(int layer) => Layer(layer);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var entry in _layers)
        {
            entry?.Key.Dispose();
            entry?.Value.Dispose();
        }
        Array.Clear(_layers);
    }
}
