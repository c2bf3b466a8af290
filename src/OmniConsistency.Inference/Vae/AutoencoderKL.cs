using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Vae;

/// <summary>
/// diffusers' AutoencoderKL (FLUX's VAE and any size of the same family), built from a <see cref="VaeConfig"/> with
/// parameters named as diffusers' checkpoint keys. Encode gives the latent posterior, Decode maps VAE-space latents
/// back to images; <see cref="ToModelSpace"/>/<see cref="FromModelSpace"/> apply the shift and scaling factors that
/// separate the VAE's latents from the transformer's. Runs in the parameters' dtype and device.
/// </summary>
public sealed class AutoencoderKL : nn.Module
{
    public VaeEncoder encoder;
    public VaeDecoder decoder;
    public Nn.Conv2d? quant_conv;
    public Nn.Conv2d? post_quant_conv;

    public AutoencoderKL(VaeConfig config, ParameterFactory factory) : base(nameof(AutoencoderKL))
    {
        config.Validate();
        Config = config;
        DType = factory.DType;
        Device = factory.Device;
        encoder = new VaeEncoder(config, factory);
        decoder = new VaeDecoder(config, factory);
        quant_conv = config.UseQuantConv ? new Nn.Conv2d(2L * config.LatentChannels, 2L * config.LatentChannels, 1, factory) : null;
        post_quant_conv = config.UsePostQuantConv ? new Nn.Conv2d(config.LatentChannels, config.LatentChannels, 1, factory) : null;
        RegisterComponents();
    }

    public VaeConfig Config { get; }
    public ScalarType DType { get; }
    public Device Device { get; }

    /// <summary>
    /// Loads a diffusers <c>vae/</c> folder: its config.json and its weights (a single safetensors file or a sharded
    /// index). Weights stored in another dtype are converted as they are read.
    /// </summary>
    public static AutoencoderKL FromFolder(string vaeFolder, ParameterFactory factory)
    {
        if (!Directory.Exists(vaeFolder)) throw new DirectoryNotFoundException($"VAE folder '{vaeFolder}' does not exist.");
        var config = VaeConfig.Load(Path.Combine(vaeFolder, "config.json"));
        using var checkpoint = SafetensorsCheckpoint.Open(vaeFolder);
        return Load(config, new CheckpointTensorSource(checkpoint), factory);
    }

    /// <summary>
    /// Loads a Black Forest Labs <c>ae.safetensors</c> (LDM key layout, optionally under <c>first_stage_model.</c>)
    /// with the given config (the file has none; FLUX's is <see cref="VaeConfig.Flux1"/>).
    /// </summary>
    public static AutoencoderKL FromBflFile(string path, VaeConfig config, ParameterFactory factory)
    {
        using var checkpoint = SafetensorsCheckpoint.Open(path);
        const string ldmPrefix = "first_stage_model.";
        var prefix = checkpoint.Keys.Any(k => k.StartsWith(ldmPrefix, StringComparison.Ordinal)) ? ldmPrefix : "";
        return Load(config, new CheckpointTensorSource(checkpoint, prefix), factory);
    }

    /// <summary>Builds the model and loads it strictly from a source in diffusers or BFL layout (detected from the keys).</summary>
    public static AutoencoderKL Load(VaeConfig config, ITensorSource source, ParameterFactory factory)
    {
        var model = new AutoencoderKL(config, factory);
        try
        {
            ModuleWeightLoader.Load(model, DiffusersView(source, config));
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return model;
    }

    /// <summary>The source under diffusers names, whichever of the supported layouts it uses.</summary>
    public static ITensorSource DiffusersView(ITensorSource source, VaeConfig config) =>
        VaeCheckpointLayouts.IsBfl(source.Keys)
            ? VaeCheckpointLayouts.FromBfl(source, config.BlockOutChannels.Count)
            : VaeCheckpointLayouts.FromDiffusers(source);

    /// <summary>Encodes images [B, in_channels, H, W] in [-1, 1] (H, W multiples of <see cref="VaeConfig.SpatialScale"/>) to the latent posterior.</summary>
    public VaeLatentDistribution Encode(Tensor images)
    {
        CheckInput(images, Config.InChannels, "images");
        using var noGrad = no_grad();
        Tensor moments;
        using (var scope = NewDisposeScope())
        {
            var h = encoder.forward(images.to(DType, Device));
            if (quant_conv is not null) h = VaeConvolution.Same(quant_conv, h);
            moments = h.MoveToOuterDisposeScope();
        }
        using (moments) return new VaeLatentDistribution(moments);
    }

    /// <summary>Decodes VAE-space latents [B, latent_channels, h, w] to images [B, out_channels, h·s, w·s], unclamped (about [-1, 1]).</summary>
    public Tensor Decode(Tensor latents)
    {
        CheckInput(latents, Config.LatentChannels, "latents");
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var z = latents.to(DType, Device);
        if (post_quant_conv is not null) z = VaeConvolution.Same(post_quant_conv, z);
        return decoder.forward(z).MoveToOuterDisposeScope();
    }

    /// <summary>VAE latents → the transformer's latent space: (z − shift_factor) · scaling_factor, in z's dtype.</summary>
    public Tensor ToModelSpace(Tensor z)
    {
        using var scope = NewDisposeScope();
        return z.sub(Config.ShiftFactor).mul(Config.ScalingFactor).MoveToOuterDisposeScope();
    }

    /// <summary>The transformer's latents → VAE latents: z / scaling_factor + shift_factor, in z's dtype (the reference divides).</summary>
    public Tensor FromModelSpace(Tensor z)
    {
        using var scope = NewDisposeScope();
        return z.div(Config.ScalingFactor).add(Config.ShiftFactor).MoveToOuterDisposeScope();
    }

    private void CheckInput(Tensor x, int channels, string what)
    {
        int s = Config.SpatialScale;
        if (x.dim() != 4 || x.shape[1] != channels || x.shape[0] == 0 || x.shape[2] == 0 || x.shape[3] == 0)
            throw new ArgumentException($"VAE {what} must be [B, {channels}, H, W] with B, H, W > 0; got [{string.Join(",", x.shape)}].", what);
        if (what == "images" && (x.shape[2] % s != 0 || x.shape[3] % s != 0))
            throw new ArgumentException($"VAE images must have H and W divisible by {s}; got {x.shape[2]}×{x.shape[3]}.", what);
    }
}
