using OmniConsistency.Inference.Nn;
using TorchSharp;
using TorchSharp.Modules;
using Conv2d = OmniConsistency.Inference.Nn.Conv2d;
using GroupNorm = OmniConsistency.Inference.Nn.GroupNorm;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace OmniConsistency.Inference.Vae;

/// <summary>diffusers' vae.Encoder (double_z): image [B,in,H,W] → moments [B,2·latent,H/s,W/s].</summary>
public sealed class VaeEncoder : nn.Module<Tensor, Tensor>
{
    public Conv2d conv_in;
    public ModuleList<DownEncoderBlock2D> down_blocks;
    public VaeMidBlock mid_block;
    public GroupNorm conv_norm_out;
    public Conv2d conv_out;

    public VaeEncoder(VaeConfig c, ParameterFactory f) : base(nameof(VaeEncoder))
    {
        var channels = c.BlockOutChannels;
        long groups = c.NormNumGroups;
        conv_in = new Conv2d(c.InChannels, channels[0], 3, f, padding: 1);
        var blocks = new DownEncoderBlock2D[channels.Count];
        for (int i = 0; i < channels.Count; i++)
        {
            long input = i == 0 ? channels[0] : channels[i - 1];
            blocks[i] = new DownEncoderBlock2D(input, channels[i], c.LayersPerBlock, groups, addDownsample: i < channels.Count - 1, f);
        }
        down_blocks = nn.ModuleList(blocks);
        mid_block = new VaeMidBlock(channels[^1], groups, c.MidBlockAddAttention, f);
        conv_norm_out = new GroupNorm(groups, channels[^1], f, 1e-6);
        conv_out = new Conv2d(channels[^1], 2L * c.LatentChannels, 3, f, padding: 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = VaeConvolution.Same(conv_in, x);
        foreach (var block in down_blocks) h = block.forward(h);
        h = mid_block.forward(h);
        return VaeConvolution.Same(conv_out, F.silu(conv_norm_out.forward(h))).MoveToOuterDisposeScope();
    }
}

/// <summary>diffusers' vae.Decoder: latents [B,latent,h,w] → image [B,out,h·s,w·s] (unclamped, about [-1,1]).</summary>
public sealed class VaeDecoder : nn.Module<Tensor, Tensor>
{
    public Conv2d conv_in;
    public VaeMidBlock mid_block;
    public ModuleList<UpDecoderBlock2D> up_blocks;
    public GroupNorm conv_norm_out;
    public Conv2d conv_out;

    public VaeDecoder(VaeConfig c, ParameterFactory f) : base(nameof(VaeDecoder))
    {
        var reversed = c.BlockOutChannels.Reverse().ToArray();
        long groups = c.NormNumGroups;
        conv_in = new Conv2d(c.LatentChannels, reversed[0], 3, f, padding: 1);
        mid_block = new VaeMidBlock(reversed[0], groups, c.MidBlockAddAttention, f);
        var blocks = new UpDecoderBlock2D[reversed.Length];
        for (int i = 0; i < reversed.Length; i++)
        {
            long input = i == 0 ? reversed[0] : reversed[i - 1];
            // The decoder has one resnet more per block than the encoder (diffusers: layers_per_block + 1).
            blocks[i] = new UpDecoderBlock2D(input, reversed[i], c.LayersPerBlock + 1, groups, addUpsample: i < reversed.Length - 1, f);
        }
        up_blocks = nn.ModuleList(blocks);
        conv_norm_out = new GroupNorm(groups, reversed[^1], f, 1e-6);
        conv_out = new Conv2d(reversed[^1], c.OutChannels, 3, f, padding: 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor z)
    {
        using var scope = NewDisposeScope();
        var h = VaeConvolution.Same(conv_in, z);
        h = mid_block.forward(h);
        foreach (var block in up_blocks) h = block.forward(h);
        return VaeConvolution.Same(conv_out, F.silu(conv_norm_out.forward(h))).MoveToOuterDisposeScope();
    }
}
