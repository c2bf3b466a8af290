using OmniConsistency.Inference.Flux;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Consistency;

/// <summary>Inputs of the condition warm-up pass.</summary>
/// <param name="ConditionLatents">Packed condition-image latents [B, C, in_channels].</param>
/// <param name="ConditionIds">[C, axes] condition position ids (<see cref="ConditionPositionIds"/>).</param>
/// <param name="EncoderHiddenStates">T5 prompt embeddings [B, T, joint_attention_dim] (the bank does not depend on them).</param>
/// <param name="PooledProjections">CLIP pooled embedding [B, pooled_projection_dim].</param>
/// <param name="Guidance">[B] raw guidance, or null for models without guidance embeds.</param>
/// <param name="TextIds">[T, axes] text position ids (zeros).</param>
public sealed record ConditionWarmupInputs(
    Tensor ConditionLatents,
    Tensor ConditionIds,
    Tensor EncoderHiddenStates,
    Tensor PooledProjections,
    Tensor? Guidance,
    Tensor TextIds);

/// <summary>The bank (owned by the caller: dispose it) and the warm-up pass's own output [B, C, out] (in the caller's dispose scope).</summary>
public sealed record ConditionWarmupResult(ConditionKvBank Bank, Tensor Output);

/// <summary>
/// OmniConsistency's condition branch. The warm-up runs the transformer once over the condition tokens at t = 0, in
/// the upstream form (text tokens present, block-causal mask: text rows see all keys, condition rows only condition
/// keys), with the consistency LoRA added to q/k/v of the condition rows, and caches every layer's condition K/V in a
/// new <see cref="ConditionKvBank"/>. Each denoising step then runs a plain forward with the bank as its attention
/// extension.
/// </summary>
public static class ConditionBranch
{
    /// <param name="lora">The consistency LoRA, or null to condition without it.</param>
    /// <param name="loraWeight">The multiplier w of the LoRA delta (upstream <c>lora_weights[0]</c>).</param>
    /// <param name="capture">Optional sink for intermediates; receives the forward's names plus
    /// "bank.&lt;processor&gt;.key" / ".value": raw keys (before norm_k and RoPE) and values, [B, heads, C, head_dim].</param>
    public static ConditionWarmupResult Warmup(FluxTransformer2DModel model, ConsistencyLora? lora, ConditionWarmupInputs inputs,
        double loraWeight = 1.0, Action<string, Tensor>? capture = null)
    {
        var latents = inputs.ConditionLatents;
        if (latents.ndim != 3 || latents.shape[1] < 1)
            throw new ArgumentException($"Condition latents must be packed [B, C, {model.Config.InChannels}], got [{string.Join(",", latents.shape)}].");
        if (lora is not null && lora.Layers.Count != model.Config.TotalAttentionLayers)
            throw new ArgumentException($"The consistency LoRA has {lora.Layers.Count} layers but the transformer has {model.Config.TotalAttentionLayers} attention layers.");
        long batch = latents.shape[0], tokens = latents.shape[1];
        var bank = new ConditionKvBank(model.Config.TotalAttentionLayers, batch, tokens);
        try
        {
            using var scope = NewDisposeScope();
            using var extension = new WarmupExtension(model.Config, model.Device, lora, loraWeight, tokens, bank, capture);
            var forward = new FluxTransformerInputs(latents, inputs.EncoderHiddenStates, inputs.PooledProjections,
                zeros([batch], model.DType, model.Device), inputs.Guidance, inputs.ConditionIds, inputs.TextIds);
            var output = model.Forward(forward, new FluxForwardContext { Attention = extension, Capture = capture });
            if (!bank.IsComplete) throw new InvalidOperationException("The warm-up pass did not fill every layer of the condition bank.");
            return new ConditionWarmupResult(bank, output.MoveToOuterDisposeScope());
        }
        catch
        {
            bank.Dispose();
            throw;
        }
    }

    /// <summary>The warm-up's attention additions: LoRA on the last C rows, block-causal mask, K/V capture into the bank.</summary>
    private sealed class WarmupExtension(FluxTransformerConfig config, Device device, ConsistencyLora? lora, double weight, long conditionTokens,
        ConditionKvBank bank, Action<string, Tensor>? capture) : IFluxAttentionExtension, IDisposable
    {
        private Tensor? _mask;

        public Tensor AdjustProjection(int layer, QkvProjection which, Tensor input, Tensor projected, long textLength)
        {
            if (lora is null || weight == 0) return projected;
            using var scope = NewDisposeScope();
            // Upstream multiplies the input by a row mask before the LoRA; computing Δ on the C condition rows only
            // gives the same rows (the masked rows' Δ is exactly 0).
            long start = input.shape[1] - conditionTokens;
            var delta = lora.Layers[layer].For(which).Delta(input.narrow(1, start, conditionTokens));
            projected.narrow(1, start, conditionTokens).add_(delta * weight);
            return projected;
        }

        public Tensor? AttentionMask(int layer, long textLength, long queryLength, long keyLength)
        {
            if (_mask is not null && _mask.shape[0] == queryLength && _mask.shape[1] == keyLength) return _mask;
            _mask?.Dispose();
            // Rows before the condition block (the text) see every key; condition rows see only condition keys.
            long open = queryLength - conditionTokens;
            var mask = ones([queryLength, keyLength], ScalarType.Bool, device);
            mask.narrow(0, open, conditionTokens).narrow(1, 0, keyLength - conditionTokens).fill_(false);
            _mask = mask.DetachFromDisposeScope();
            return _mask;
        }

        public void ObserveImageKeyValue(int layer, Tensor rawKey, Tensor key, Tensor value)
        {
            long rows = key.shape[2];
            if (rows < conditionTokens) throw new InvalidOperationException($"Attention layer {layer} has {rows} image rows, fewer than the {conditionTokens} condition tokens.");
            long start = rows - conditionTokens;
            bank.Store(layer, key.narrow(2, start, conditionTokens), value.narrow(2, start, conditionTokens));
            if (capture is null) return;
            var name = config.AttentionProcessorName(layer);
            capture($"bank.{name}.key", rawKey.narrow(2, start, conditionTokens));
            capture($"bank.{name}.value", value.narrow(2, start, conditionTokens));
        }

        public (Tensor Key, Tensor Value)? AppendedKeyValue(int layer) => null;

        public void Dispose() => _mask?.Dispose();
    }
}
