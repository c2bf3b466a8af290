using OmniConsistency.Inference.Nn;
using TorchSharp;
using TorchSharp.Modules;
using Conv2d = OmniConsistency.Inference.Nn.Conv2d;
using GroupNorm = OmniConsistency.Inference.Nn.GroupNorm;
using Linear = OmniConsistency.Inference.Nn.Linear;
using Identity = OmniConsistency.Inference.Nn.Identity;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace OmniConsistency.Inference.Vae;

// The building blocks of diffusers' AutoencoderKL (models/resnet.py, downsampling.py, upsampling.py,
// unets/unet_2d_blocks.py, attention_processor.py), with the same field names so parameter names are checkpoint keys.
// Every GroupNorm uses eps 1e-6, as diffusers' VAE blocks pass resnet_eps=1e-6 everywhere.

/// <summary>ResnetBlock2D without time embedding: conv2(SiLU(GN2(conv1(SiLU(GN1(x)))))) + shortcut(x).</summary>
public sealed class ResnetBlock2D : nn.Module<Tensor, Tensor>
{
    public GroupNorm norm1;
    public Conv2d conv1;
    public GroupNorm norm2;
    public Conv2d conv2;
    /// <summary>A 1×1 projection of the input, present only when the block changes the channel count.</summary>
    public Conv2d? conv_shortcut;

    public ResnetBlock2D(long inChannels, long outChannels, long groups, ParameterFactory f) : base(nameof(ResnetBlock2D))
    {
        norm1 = new GroupNorm(groups, inChannels, f, 1e-6);
        conv1 = new Conv2d(inChannels, outChannels, 3, f, padding: 1);
        norm2 = new GroupNorm(groups, outChannels, f, 1e-6);
        conv2 = new Conv2d(outChannels, outChannels, 3, f, padding: 1);
        conv_shortcut = inChannels != outChannels ? new Conv2d(inChannels, outChannels, 1, f) : null;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = VaeConvolution.Same(conv1, F.silu(norm1.forward(x)));
        h = VaeConvolution.Same(conv2, F.silu(norm2.forward(h)));
        var shortcut = conv_shortcut is null ? x : VaeConvolution.Same(conv_shortcut, x);
        return (shortcut + h).MoveToOuterDisposeScope();
    }
}

/// <summary>Downsample2D with padding=0: zero-pad right and bottom by one, then a 3×3 stride-2 convolution.</summary>
public sealed class Downsample2D : nn.Module<Tensor, Tensor>
{
    public Conv2d conv;

    public Downsample2D(long channels, ParameterFactory f) : base(nameof(Downsample2D))
    {
        conv = new Conv2d(channels, channels, 3, f, stride: 2, padding: 0);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return VaeConvolution.Apply(conv, F.pad(x, [0, 1, 0, 1], PaddingModes.Constant, 0), 2, 0).MoveToOuterDisposeScope();
    }
}

/// <summary>Upsample2D: nearest-neighbour ×2, then a 3×3 convolution.</summary>
public sealed class Upsample2D : nn.Module<Tensor, Tensor>
{
    public Conv2d conv;

    public Upsample2D(long channels, ParameterFactory f) : base(nameof(Upsample2D))
    {
        conv = new Conv2d(channels, channels, 3, f, padding: 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        // Nearest-neighbour copies values, so no dtype upcast is needed for bf16 (diffusers' upcast is exact too).
        var up = F.interpolate(x, scale_factor: [2.0, 2.0], mode: InterpolationMode.Nearest);
        return VaeConvolution.Same(conv, up).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// The VAE mid-block attention: one head over all H·W positions with head dim = C (scale 1/√C), on group-normed
/// input, with a residual connection. diffusers' Attention(heads = C / attention_head_dim = 1, residual_connection=True).
/// </summary>
public sealed class VaeAttention : nn.Module<Tensor, Tensor>
{
    public GroupNorm group_norm;
    public Linear to_q;
    public Linear to_k;
    public Linear to_v;
    /// <summary>[Linear, Dropout] in diffusers, hence the key <c>to_out.0</c>.</summary>
    public ModuleList<nn.Module<Tensor, Tensor>> to_out;

    public VaeAttention(long channels, long groups, ParameterFactory f) : base(nameof(VaeAttention))
    {
        group_norm = new GroupNorm(groups, channels, f, 1e-6);
        to_q = new Linear(channels, channels, f);
        to_k = new Linear(channels, channels, f);
        to_v = new Linear(channels, channels, f);
        to_out = nn.ModuleList<nn.Module<Tensor, Tensor>>(new Linear(channels, channels, f), new Identity());
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var tokens = group_norm.forward(x).view(b, c, h * w).transpose(1, 2);      // [B, HW, C]
        var q = to_q.forward(tokens).unsqueeze(1);                                    // [B, 1, HW, C]
        var k = to_k.forward(tokens).unsqueeze(1);
        var v = to_v.forward(tokens).unsqueeze(1);
        // SDPA's default scale is 1/sqrt(head dim) = 1/sqrt(C), the reference's; its fused CPU/CUDA kernels avoid
        // materialising the (HW)² score matrix (16384² at 1024² output).
        var o = F.scaled_dot_product_attention(q, k, v).squeeze(1);
        o = to_out[0].forward(o);
        return (o.transpose(1, 2).reshape(b, c, h, w) + x).MoveToOuterDisposeScope();
    }
}

/// <summary>UNetMidBlock2D without time embedding: resnet → [attention] → resnet.</summary>
public sealed class VaeMidBlock : nn.Module<Tensor, Tensor>
{
    public ModuleList<ResnetBlock2D> resnets;
    /// <summary>Empty when the config sets mid_block_add_attention = false (no keys then).</summary>
    public ModuleList<VaeAttention> attentions;

    public VaeMidBlock(long channels, long groups, bool addAttention, ParameterFactory f) : base(nameof(VaeMidBlock))
    {
        resnets = nn.ModuleList(new ResnetBlock2D(channels, channels, groups, f), new ResnetBlock2D(channels, channels, groups, f));
        attentions = addAttention ? nn.ModuleList(new VaeAttention(channels, groups, f)) : nn.ModuleList<VaeAttention>();
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = resnets[0].forward(x);
        if (attentions.Count > 0) h = attentions[0].forward(h);
        return resnets[1].forward(h).MoveToOuterDisposeScope();
    }
}

/// <summary>DownEncoderBlock2D: resnets, then an optional Downsample2D (key <c>downsamplers.0</c>).</summary>
public sealed class DownEncoderBlock2D : nn.Module<Tensor, Tensor>
{
    public ModuleList<ResnetBlock2D> resnets;
    public ModuleList<Downsample2D> downsamplers;

    public DownEncoderBlock2D(long inChannels, long outChannels, int layers, long groups, bool addDownsample, ParameterFactory f) : base(nameof(DownEncoderBlock2D))
    {
        resnets = nn.ModuleList(Enumerable.Range(0, layers).Select(i => new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, groups, f)).ToArray());
        downsamplers = addDownsample ? nn.ModuleList(new Downsample2D(outChannels, f)) : nn.ModuleList<Downsample2D>();
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x;
        foreach (var r in resnets) h = r.forward(h);
        foreach (var d in downsamplers) h = d.forward(h);
        return h.MoveToOuterDisposeScope();
    }
}

/// <summary>UpDecoderBlock2D: resnets, then an optional Upsample2D (key <c>upsamplers.0</c>).</summary>
public sealed class UpDecoderBlock2D : nn.Module<Tensor, Tensor>
{
    public ModuleList<ResnetBlock2D> resnets;
    public ModuleList<Upsample2D> upsamplers;

    public UpDecoderBlock2D(long inChannels, long outChannels, int layers, long groups, bool addUpsample, ParameterFactory f) : base(nameof(UpDecoderBlock2D))
    {
        resnets = nn.ModuleList(Enumerable.Range(0, layers).Select(i => new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, groups, f)).ToArray());
        upsamplers = addUpsample ? nn.ModuleList(new Upsample2D(outChannels, f)) : nn.ModuleList<Upsample2D>();
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x;
        foreach (var r in resnets) h = r.forward(h);
        foreach (var u in upsamplers) h = u.forward(h);
        return h.MoveToOuterDisposeScope();
    }
}
