using static TorchSharp.torch;

namespace OmniConsistency.Inference.Pipelines;

/// <summary>
/// The random draws of one generation: the initial latent noise, then (OmniConsistency only) the ε of the condition
/// image's VAE posterior sample. Seeded, they come from ONE CPU <see cref="Generator"/> in that order, each drawn
/// directly in its tensor's dtype and then moved to the device (spec §10: diffusers' randn_tensor on the reference's CPU
/// generator), so a seed reproduces the reference's noise bit for bit (TorchSharp shares PyTorch's CPU generator).
/// Given, they are the tensors of a golden case. One instance serves one generation; dispose it after.
/// </summary>
public abstract class GenerationNoise : IDisposable
{
    private int _draws;

    /// <summary>Draws from <c>torch.Generator("cpu").manual_seed(seed)</c> (a negative seed wraps modulo 2^64, as PyTorch's does).</summary>
    public static GenerationNoise FromSeed(long seed) => new Seeded(seed);

    /// <summary>Uses the given tensors: <paramref name="noise"/> unpacked [B, c, h, w], <paramref name="conditionEps"/> shaped like the condition latents.</summary>
    public static GenerationNoise FromTensors(Tensor noise, Tensor? conditionEps = null) => new Given(noise, conditionEps);

    /// <summary>The initial noise (first draw).</summary>
    public Tensor InitialNoise(long[] shape, ScalarType dtype, Device device)
    {
        if (Interlocked.Increment(ref _draws) != 1) throw new InvalidOperationException("The initial noise must be the first draw of a generation.");
        return Draw("initial noise", shape, dtype, device, condition: false);
    }

    /// <summary>The condition posterior's ε (second draw, after <see cref="InitialNoise"/>).</summary>
    public Tensor ConditionEps(long[] shape, ScalarType dtype, Device device)
    {
        if (Interlocked.Increment(ref _draws) != 2) throw new InvalidOperationException("The condition ε is drawn once, after the initial noise.");
        return Draw("condition ε", shape, dtype, device, condition: true);
    }

    protected abstract Tensor Draw(string what, long[] shape, ScalarType dtype, Device device, bool condition);

    public virtual void Dispose() => GC.SuppressFinalize(this);

    private sealed class Seeded(long seed) : GenerationNoise
    {
        private readonly Generator _generator = new(unchecked((ulong)seed));

        protected override Tensor Draw(string what, long[] shape, ScalarType dtype, Device device, bool condition)
        {
            using var scope = NewDisposeScope();
            var t = randn(shape, dtype: dtype, device: CPU, generator: _generator);
            return t.to(device).MoveToOuterDisposeScope();
        }

        public override void Dispose()
        {
            _generator.Dispose();
            base.Dispose();
        }
    }

    private sealed class Given(Tensor noise, Tensor? conditionEps) : GenerationNoise
    {
        protected override Tensor Draw(string what, long[] shape, ScalarType dtype, Device device, bool condition)
        {
            var source = condition ? conditionEps ?? throw new InvalidOperationException("No condition ε was given.") : noise;
            if (!source.shape.SequenceEqual(shape))
                throw new ArgumentException($"The given {what} is [{string.Join(",", source.shape)}] but [{string.Join(",", shape)}] is needed.");
            return source.to(dtype, device, copy: true);
        }
    }
}
