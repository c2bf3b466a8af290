using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Vae;

/// <summary>
/// The encoder's diagonal Gaussian posterior (diffusers' DiagonalGaussianDistribution): mean and log-variance are the
/// two channel halves of the moments, log-variance clamped to [-30, 20], std = exp(0.5·logvar). Owns its tensors.
/// </summary>
public sealed class VaeLatentDistribution : IDisposable
{
    public VaeLatentDistribution(Tensor moments)
    {
        using var scope = NewDisposeScope();
        if (moments.dim() != 4 || moments.shape[1] % 2 != 0)
            throw new ArgumentException($"VAE moments must be [B, 2·C, h, w]; got [{string.Join(",", moments.shape)}].", nameof(moments));
        var halves = moments.chunk(2, dim: 1);
        Mean = halves[0].contiguous().MoveToOuterDisposeScope();
        LogVar = halves[1].clamp(-30.0, 20.0).MoveToOuterDisposeScope();
        Std = LogVar.mul(0.5).exp().MoveToOuterDisposeScope();
    }

    public Tensor Mean { get; }
    public Tensor LogVar { get; }
    public Tensor Std { get; }

    /// <summary>The distribution's mode (= its mean), as a new tensor.</summary>
    public Tensor Mode() => Mean.clone();

    /// <summary>mean + std·eps with a given standard-normal <paramref name="eps"/> of the mean's shape.</summary>
    public Tensor Sample(Tensor eps)
    {
        if (!eps.shape.SequenceEqual(Mean.shape))
            throw new ArgumentException($"eps has shape [{string.Join(",", eps.shape)}], the latents [{string.Join(",", Mean.shape)}].", nameof(eps));
        using var scope = NewDisposeScope();
        return Mean.add(Std.mul(eps.to(Mean.dtype, Mean.device))).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Samples with noise drawn from <paramref name="generator"/> as diffusers' randn_tensor does: on the generator's
    /// device (CPU for the reference's generator), directly in the latents' dtype, then moved to the latents' device.
    /// Drawing fp32 and casting would not reproduce a bf16 draw.
    /// </summary>
    public Tensor Sample(Generator generator)
    {
        using var scope = NewDisposeScope();
        var eps = randn(Mean.shape, dtype: Mean.dtype, device: generator.device, generator: generator);
        return Sample(eps).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        Mean.Dispose();
        LogVar.Dispose();
        Std.Dispose();
    }
}
