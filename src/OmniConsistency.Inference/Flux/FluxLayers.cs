using OmniConsistency.Inference.Nn;
using TorchSharp;
using TorchSharp.Modules;
using Linear = OmniConsistency.Inference.Nn.Linear;
using Identity = OmniConsistency.Inference.Nn.Identity;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace OmniConsistency.Inference.Flux;

// The small modules of a FLUX transformer. Field names are the diffusers attribute names, so parameter names are
// the diffusers checkpoint keys. Arithmetic follows diffusers op by op (same operand order and dtypes) because in
// bf16 every rounding shows.

/// <summary>diffusers RMSNorm over the last dim: statistics in fp32, normalised value cast to the weight dtype, then × weight.</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    public Parameter weight;
    private readonly double _eps;

    public RmsNorm(long dim, ParameterFactory f, double eps = 1e-6) : base(nameof(RmsNorm))
    {
        weight = f.Create(dim);
        _eps = eps;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var variance = x.to(ScalarType.Float32).pow(2).mean([-1L], keepdim: true);
        // bf16 ⊙ fp32 promotes to fp32, as in diffusers.
        var normed = x * (variance + _eps).rsqrt();
        if (weight.dtype is ScalarType.BFloat16 or ScalarType.Float16) normed = normed.to(weight.dtype);
        return (normed * weight).to(x.dtype).MoveToOuterDisposeScope();
    }
}

/// <summary>Two Linears with SiLU between (diffusers TimestepEmbedding and PixArtAlphaTextProjection share this form).</summary>
public sealed class MlpEmbedding : nn.Module<Tensor, Tensor>
{
    public Linear linear_1;
    public Linear linear_2;

    public MlpEmbedding(long inFeatures, long dim, ParameterFactory f) : base(nameof(MlpEmbedding))
    {
        linear_1 = new Linear(inFeatures, dim, f);
        linear_2 = new Linear(dim, dim, f);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return linear_2.forward(F.silu(linear_1.forward(x))).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// <c>time_text_embed</c>: temb = (timestep_embedder(S(t)) + guidance_embedder(S(g))) + text_embedder(pooled), where S is
/// the 256-channel sinusoid (cos first). Without guidance embeds: timestep_embedder(S(t)) + text_embedder(pooled).
/// </summary>
public sealed class FluxTimeTextEmbedding : nn.Module
{
    public const int SinusoidChannels = 256;

    public MlpEmbedding timestep_embedder;
    public MlpEmbedding? guidance_embedder;
    public MlpEmbedding text_embedder;

    public FluxTimeTextEmbedding(FluxTransformerConfig config, ParameterFactory f) : base(nameof(FluxTimeTextEmbedding))
    {
        timestep_embedder = new MlpEmbedding(SinusoidChannels, config.InnerDim, f);
        guidance_embedder = config.GuidanceEmbeds ? new MlpEmbedding(SinusoidChannels, config.InnerDim, f) : null;
        text_embedder = new MlpEmbedding(config.PooledProjectionDim, config.InnerDim, f);
        RegisterComponents();
    }

    /// <param name="timestep">[B] in the model dtype, already ×1000.</param>
    /// <param name="guidance">[B] in the model dtype, already ×1000; null for models without guidance embeds.</param>
    /// <param name="pooled">[B, pooled_projection_dim] in the model dtype.</param>
    public Tensor Forward(Tensor timestep, Tensor? guidance, Tensor pooled)
    {
        using var scope = NewDisposeScope();
        var temb = timestep_embedder.forward(Sinusoid(timestep).to(pooled.dtype));
        if (guidance_embedder is not null)
        {
            if (guidance is null) throw new ArgumentException("This FLUX model embeds guidance (guidance_embeds true): pass a guidance value.");
            temb = temb + guidance_embedder.forward(Sinusoid(guidance).to(pooled.dtype));
        }
        else if (guidance is not null)
        {
            throw new ArgumentException("This FLUX model has no guidance embedder (guidance_embeds false): do not pass guidance.");
        }
        return (temb + text_embedder.forward(pooled)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// diffusers get_timestep_embedding(v, 256, flip_sin_to_cos=True, downscale_freq_shift=0, scale=1): frequencies
    /// exp(−ln(10⁴)·k/128) in fp32, angles v·f with v upcast to fp32, output [cos | sin] in fp32.
    /// </summary>
    public static Tensor Sinusoid(Tensor values)
    {
        using var scope = NewDisposeScope();
        const int half = SinusoidChannels / 2;
        var exponent = arange(0, half, dtype: ScalarType.Float32, device: values.device) * -Math.Log(10000) / (double)half;
        var angles = values.to(ScalarType.Float32).unsqueeze(1) * exponent.exp().unsqueeze(0);
        return cat([angles.cos(), angles.sin()], 1).MoveToOuterDisposeScope();
    }
}

/// <summary>AdaLayerNormZero (<c>norm1</c>, <c>norm1_context</c>): chunks (shift, scale, gate, shift_mlp, scale_mlp, gate_mlp).</summary>
public sealed class AdaLayerNormZero : nn.Module
{
    public Linear linear;
    private readonly long _dim;

    public AdaLayerNormZero(long dim, ParameterFactory f) : base(nameof(AdaLayerNormZero))
    {
        _dim = dim;
        linear = new Linear(dim, 6 * dim, f);
        RegisterComponents();
    }

    /// <summary>Returns the modulated x and the six chunks (each [B, dim]; the first two are already applied).</summary>
    public (Tensor Normed, Tensor Gate, Tensor ShiftMlp, Tensor ScaleMlp, Tensor GateMlp) Forward(Tensor x, Tensor temb)
    {
        var chunks = linear.forward(F.silu(temb)).chunk(6, 1);
        var normed = FluxOps.Modulate(FluxOps.LayerNorm(x, _dim), chunks[1], chunks[0]);
        return (normed, chunks[2], chunks[3], chunks[4], chunks[5]);
    }
}

/// <summary>AdaLayerNormZeroSingle (single blocks' <c>norm</c>): chunks (shift, scale, gate).</summary>
public sealed class AdaLayerNormZeroSingle : nn.Module
{
    public Linear linear;
    private readonly long _dim;

    public AdaLayerNormZeroSingle(long dim, ParameterFactory f) : base(nameof(AdaLayerNormZeroSingle))
    {
        _dim = dim;
        linear = new Linear(dim, 3 * dim, f);
        RegisterComponents();
    }

    public (Tensor Normed, Tensor Gate) Forward(Tensor x, Tensor temb)
    {
        var chunks = linear.forward(F.silu(temb)).chunk(3, 1);
        return (FluxOps.Modulate(FluxOps.LayerNorm(x, _dim), chunks[1], chunks[0]), chunks[2]);
    }
}

/// <summary>AdaLayerNormContinuous (<c>norm_out</c>): chunks (scale, shift) — scale first, unlike BFL's final layer.</summary>
public sealed class AdaLayerNormContinuous : nn.Module
{
    public Linear linear;
    private readonly long _dim;

    public AdaLayerNormContinuous(long dim, ParameterFactory f) : base(nameof(AdaLayerNormContinuous))
    {
        _dim = dim;
        linear = new Linear(dim, 2 * dim, f);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor temb)
    {
        using var scope = NewDisposeScope();
        var chunks = linear.forward(F.silu(temb).to(x.dtype)).chunk(2, 1);
        return FluxOps.Modulate(FluxOps.LayerNorm(x, _dim), chunks[0], chunks[1]).MoveToOuterDisposeScope();
    }
}

/// <summary>diffusers FeedForward with activation "gelu-approximate": <c>net.0.proj</c> → GELU(tanh) → <c>net.2</c> (net.1 = dropout).</summary>
public sealed class FeedForward : nn.Module<Tensor, Tensor>
{
    public ModuleList<nn.Module<Tensor, Tensor>> net;

    public FeedForward(long dim, long hidden, ParameterFactory f) : base(nameof(FeedForward))
    {
        net = nn.ModuleList<nn.Module<Tensor, Tensor>>(new GeluProjection(dim, hidden, f), new Identity(), new Linear(hidden, dim, f));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return net[2].forward(net[0].forward(x)).MoveToOuterDisposeScope();
    }
}

/// <summary>diffusers GELU module: <c>proj</c> then the tanh-approximated GELU (one fused kernel, one rounding).</summary>
public sealed class GeluProjection : nn.Module<Tensor, Tensor>
{
    public Linear proj;

    public GeluProjection(long dim, long hidden, ParameterFactory f) : base(nameof(GeluProjection))
    {
        proj = new Linear(dim, hidden, f);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return FluxOps.GeluTanh(proj.forward(x)).MoveToOuterDisposeScope();
    }
}

internal static class FluxOps
{
    /// <summary>LayerNorm without affine parameters, eps 1e-6 (every norm of a FLUX block).</summary>
    public static Tensor LayerNorm(Tensor x, long dim) => F.layer_norm(x, [dim], eps: 1e-6);

    /// <summary>x·(1 + scale) + shift with [B, D] modulation broadcast over tokens (same op order as diffusers).</summary>
    public static Tensor Modulate(Tensor normed, Tensor scale, Tensor shift) => normed * (scale + 1).unsqueeze(1) + shift.unsqueeze(1);

    public static Tensor GeluTanh(Tensor x) => F.gelu(x, GELU.Approximate.tanh);
}
