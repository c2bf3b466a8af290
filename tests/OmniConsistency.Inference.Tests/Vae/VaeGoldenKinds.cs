using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.Tests.Golden;
using OmniConsistency.Inference.Vae;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Vae;

internal static class VaeGoldenModel
{
    /// <summary>The case's VAE: <c>model</c> is a diffusers model folder with a <c>vae/</c> subfolder.</summary>
    public static AutoencoderKL Load(GoldenCase c) =>
        AutoencoderKL.FromFolder(Path.Combine(c.ModelPath, "vae"), ParameterFactory.Cpu(ScalarType.Float32));
}

/// <summary>AutoencoderKL.encode → posterior statistics, a sample with the given eps, and both scaled into model space.</summary>
[GoldenKind("vae_encode")]
public sealed class VaeEncodeKind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c)
    {
        using var vae = VaeGoldenModel.Load(c);
        using var posterior = vae.Encode(c.Input("image"));
        var sample = posterior.Sample(c.Input("eps"));
        var mode = posterior.Mode();
        return new Dictionary<string, Tensor>
        {
            ["mean"] = posterior.Mean.clone(),
            ["logvar"] = posterior.LogVar.clone(),
            ["std"] = posterior.Std.clone(),
            ["mode"] = mode,
            ["sample"] = sample,
            ["latents_mode_scaled"] = vae.ToModelSpace(mode),
            ["latents_sample_scaled"] = vae.ToModelSpace(sample),
        };
    }
}

/// <summary>The pipeline's tail: unpack (OmniConsistency's factor 16) → out of model space → decode → [0,1] image.</summary>
[GoldenKind("vae_decode")]
public sealed class VaeDecodeKind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c)
    {
        int height = c.Params.GetProperty("height").GetInt32(), width = c.Params.GetProperty("width").GetInt32();
        int packedScale = c.Params.TryGetProperty("vae_scale_factor", out var s) ? s.GetInt32() : LatentPacking.FluxPackedScale;
        using var vae = VaeGoldenModel.Load(c);
        var latents = LatentPacking.Unpack(c.Input("latents_packed"), height, width, packedScale);
        var vaeInput = vae.FromModelSpace(latents);
        var decoded = vae.Decode(vaeInput);
        return new Dictionary<string, Tensor>
        {
            ["latents"] = latents,
            ["vae_input"] = vaeInput,
            ["decoded"] = decoded,
            ["image"] = OmniConsistency.Inference.Imaging.ImageTensors.Denormalize(decoded),
        };
    }
}
