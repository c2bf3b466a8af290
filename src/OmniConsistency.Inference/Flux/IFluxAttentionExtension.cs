using static TorchSharp.torch;

namespace OmniConsistency.Inference.Flux;

public enum QkvProjection { Query, Key, Value }

/// <summary>
/// Per-call additions to the attention layers of one transformer forward (the OmniConsistency condition branch uses
/// them: a consistency LoRA on condition rows, a block-causal mask and K/V capture in the warm-up, and appended
/// condition K/V in each denoising step). It is passed explicitly with each forward call
/// (<see cref="FluxForwardContext.Attention"/>) and never stored on the shared model, so generations on one model
/// cannot see each other's state.
/// Layers are numbered 0…L−1 for the double blocks and L…L+S−1 for the single blocks
/// (<see cref="FluxTransformer2DModel.AttentionProcessorName"/> gives their diffusers processor names).
/// "Image rows" are the image-stream tokens of a double block and the rows after the text of a single block.
/// </summary>
public interface IFluxAttentionExtension
{
    /// <summary>
    /// Called after each q/k/v projection of the image rows (double blocks: the image-stream input; single blocks:
    /// the whole [text; image] sequence, <paramref name="textLength"/> rows of text first). Returns the projection to
    /// use: <paramref name="projected"/> itself (possibly modified in place) or a new tensor.
    /// </summary>
    Tensor AdjustProjection(int layer, QkvProjection which, Tensor input, Tensor projected, long textLength);

    /// <summary>A boolean mask [queries, keys] (true = may attend) for this layer, or null for none.</summary>
    Tensor? AttentionMask(int layer, long textLength, long queryLength, long keyLength);

    /// <summary>
    /// Sees the image rows' keys and values, [B, heads, N, head_dim]: <paramref name="rawKey"/> before norm_k and
    /// RoPE, <paramref name="key"/> after both, and the values. The tensors belong to the forward's dispose scope.
    /// </summary>
    void ObserveImageKeyValue(int layer, Tensor rawKey, Tensor key, Tensor value);

    /// <summary>Keys and values appended after the layer's own (already normalised and rotated), [B, heads, C, head_dim]; or null.</summary>
    (Tensor Key, Tensor Value)? AppendedKeyValue(int layer);
}

/// <summary>Per-call options of a transformer forward. Both members are optional.</summary>
public sealed class FluxForwardContext
{
    /// <summary>Additions to every attention layer for this call (see <see cref="IFluxAttentionExtension"/>).</summary>
    public IFluxAttentionExtension? Attention { get; init; }

    /// <summary>
    /// Receives named intermediates: "temb", "rope_cos", "rope_sin", "transformer_blocks.i.encoder_hidden_states",
    /// "transformer_blocks.i.hidden_states", "single_transformer_blocks.i.hidden_states" (text rows first), and
    /// whatever an attention extension reports. The tensors belong to the forward's dispose scope: copy what you keep
    /// (<see cref="TensorCapture"/> does).
    /// </summary>
    public Action<string, Tensor>? Capture { get; init; }
}
