using OmniConsistency.Inference.Nn;
using TorchSharp;
using TorchSharp.Modules;
using Linear = OmniConsistency.Inference.Nn.Linear;
using Identity = OmniConsistency.Inference.Nn.Identity;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace OmniConsistency.Inference.Flux;

/// <summary>
/// The joint attention of a double-stream block (<c>transformer_blocks.N.attn</c>), diffusers FluxAttnProcessor2_0:
/// per-head RMSNorm on q/k of both streams, text first in the joint sequence, RoPE on q/k, SDPA, then
/// <c>to_out.0</c> for the image rows and <c>to_add_out</c> for the text rows.
/// </summary>
public sealed class FluxJointAttention : nn.Module
{
    public Linear to_q, to_k, to_v;
    public RmsNorm norm_q, norm_k;
    public Linear add_q_proj, add_k_proj, add_v_proj;
    public RmsNorm norm_added_q, norm_added_k;
    public ModuleList<nn.Module<Tensor, Tensor>> to_out;
    public Linear to_add_out;

    private readonly int _heads;

    public FluxJointAttention(FluxTransformerConfig config, ParameterFactory f) : base(nameof(FluxJointAttention))
    {
        long dim = config.InnerDim, headDim = config.AttentionHeadDim;
        _heads = config.NumAttentionHeads;
        to_q = new Linear(dim, dim, f);
        to_k = new Linear(dim, dim, f);
        to_v = new Linear(dim, dim, f);
        norm_q = new RmsNorm(headDim, f);
        norm_k = new RmsNorm(headDim, f);
        add_q_proj = new Linear(dim, dim, f);
        add_k_proj = new Linear(dim, dim, f);
        add_v_proj = new Linear(dim, dim, f);
        norm_added_q = new RmsNorm(headDim, f);
        norm_added_k = new RmsNorm(headDim, f);
        to_out = nn.ModuleList<nn.Module<Tensor, Tensor>>(new Linear(dim, dim, f), new Identity());
        to_add_out = new Linear(dim, dim, f);
        RegisterComponents();
    }

    /// <param name="image">Modulated image-stream tokens [B, N, D].</param>
    /// <param name="text">Modulated text-stream tokens [B, T, D].</param>
    /// <param name="rope">RoPE table for the T + N live positions (text first).</param>
    public (Tensor Image, Tensor Text) Forward(Tensor image, Tensor text, RotaryTable rope, int layer, IFluxAttentionExtension? extension)
    {
        using var scope = NewDisposeScope();
        long t = text.shape[1];
        var q = AttentionMath.Project(to_q, image, QkvProjection.Query, layer, 0, extension);
        var k = AttentionMath.Project(to_k, image, QkvProjection.Key, layer, 0, extension);
        var v = AttentionMath.Project(to_v, image, QkvProjection.Value, layer, 0, extension);
        var kRaw = AttentionMath.Heads(k, _heads);
        var qImage = norm_q.forward(AttentionMath.Heads(q, _heads));
        var kImage = norm_k.forward(kRaw);
        var vImage = AttentionMath.Heads(v, _heads);

        var qText = norm_added_q.forward(AttentionMath.Heads(add_q_proj.forward(text), _heads));
        var kText = norm_added_k.forward(AttentionMath.Heads(add_k_proj.forward(text), _heads));
        var vText = AttentionMath.Heads(add_v_proj.forward(text), _heads);

        var query = FluxRotaryEmbedding.Apply(cat([qText, qImage], 2), rope);
        var key = FluxRotaryEmbedding.Apply(cat([kText, kImage], 2), rope);
        var value = cat([vText, vImage], 2);
        extension?.ObserveImageKeyValue(layer, kRaw, key.narrow(2, t, key.shape[2] - t), vImage);

        var output = AttentionMath.Attend(query, key, value, layer, t, extension);
        var textOut = to_add_out.forward(output.narrow(1, 0, t));
        var imageOut = to_out[0].forward(output.narrow(1, t, output.shape[1] - t));
        return (imageOut.MoveToOuterDisposeScope(), textOut.MoveToOuterDisposeScope());
    }
}

/// <summary>
/// The attention of a single-stream block (<c>single_transformer_blocks.N.attn</c>): q/k/v over the whole
/// [text; image] sequence, no output projection (the block's <c>proj_out</c> follows).
/// </summary>
public sealed class FluxSingleAttention : nn.Module
{
    public Linear to_q, to_k, to_v;
    public RmsNorm norm_q, norm_k;

    private readonly int _heads;

    public FluxSingleAttention(FluxTransformerConfig config, ParameterFactory f) : base(nameof(FluxSingleAttention))
    {
        long dim = config.InnerDim, headDim = config.AttentionHeadDim;
        _heads = config.NumAttentionHeads;
        to_q = new Linear(dim, dim, f);
        to_k = new Linear(dim, dim, f);
        to_v = new Linear(dim, dim, f);
        norm_q = new RmsNorm(headDim, f);
        norm_k = new RmsNorm(headDim, f);
        RegisterComponents();
    }

    /// <param name="x">Modulated sequence [B, T + N, D], text first.</param>
    public Tensor Forward(Tensor x, long textLength, RotaryTable rope, int layer, IFluxAttentionExtension? extension)
    {
        using var scope = NewDisposeScope();
        var q = AttentionMath.Project(to_q, x, QkvProjection.Query, layer, textLength, extension);
        var k = AttentionMath.Project(to_k, x, QkvProjection.Key, layer, textLength, extension);
        var v = AttentionMath.Project(to_v, x, QkvProjection.Value, layer, textLength, extension);
        var kRaw = AttentionMath.Heads(k, _heads);
        var query = FluxRotaryEmbedding.Apply(norm_q.forward(AttentionMath.Heads(q, _heads)), rope);
        var key = FluxRotaryEmbedding.Apply(norm_k.forward(kRaw), rope);
        var value = AttentionMath.Heads(v, _heads);
        if (extension is not null)
        {
            long n = x.shape[1] - textLength;
            extension.ObserveImageKeyValue(layer, kRaw.narrow(2, textLength, n), key.narrow(2, textLength, n), value.narrow(2, textLength, n));
        }
        return AttentionMath.Attend(query, key, value, layer, textLength, extension).MoveToOuterDisposeScope();
    }
}

internal static class AttentionMath
{
    public static Tensor Project(Linear projection, Tensor input, QkvProjection which, int layer, long textLength, IFluxAttentionExtension? extension)
    {
        var projected = projection.forward(input);
        return extension is null ? projected : extension.AdjustProjection(layer, which, input, projected, textLength);
    }

    /// <summary>[B, S, H·hd] → [B, H, S, hd] (channel k belongs to head k / hd).</summary>
    public static Tensor Heads(Tensor x, int heads) => x.view(x.shape[0], x.shape[1], heads, x.shape[2] / heads).transpose(1, 2);

    /// <summary>SDPA (scale 1/√hd) with the extension's appended K/V and mask; returns [B, S_q, H·hd] in q's dtype.</summary>
    public static Tensor Attend(Tensor query, Tensor key, Tensor value, int layer, long textLength, IFluxAttentionExtension? extension)
    {
        if (extension?.AppendedKeyValue(layer) is { } extra)
        {
            if (extra.Key.shape[0] != key.shape[0])
                throw new ArgumentException($"Appended keys have batch {extra.Key.shape[0]} but the forward has batch {key.shape[0]}.");
            key = cat([key, extra.Key.to(key.dtype)], 2);
            value = cat([value, extra.Value.to(value.dtype)], 2);
        }
        var mask = extension?.AttentionMask(layer, textLength, query.shape[2], key.shape[2]);
        var o = F.scaled_dot_product_attention(query, key, value, mask);
        return o.transpose(1, 2).reshape(o.shape[0], o.shape[2], o.shape[1] * o.shape[3]).to(query.dtype);
    }
}
