using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.BuiltIn;

/// <summary>
/// Deterministic random weights for the built-in demo model. A module is built on the meta device (no memory) to list
/// its parameter names and shapes, which are exactly the checkpoint keys its loader expects; values are then drawn in
/// name order from one seeded CPU generator per component: matrices and convolution kernels U(±1/√fan_in) (PyTorch's
/// default Linear/Conv bound), biases U(±0.02), one-dimensional weights (the norms' scales) 1.
/// </summary>
internal static class RandomWeights
{
    public const double BiasBound = 0.02;

    /// <summary>Names and shapes of <paramref name="metaModule"/>'s parameters, sorted by name.</summary>
    public static List<(string Name, long[] Shape)> Manifest(nn.Module metaModule) =>
        metaModule.named_parameters().Select(p => (p.name, p.parameter.shape)).OrderBy(p => p.name, StringComparer.Ordinal).ToList();

    /// <summary>Draws every tensor of <paramref name="manifest"/> (float32, CPU) in order from <c>Generator(seed)</c>.</summary>
    public static List<KeyValuePair<string, Tensor>> Draw(IEnumerable<(string Name, long[] Shape)> manifest, ulong seed)
    {
        using var generator = new Generator(seed);
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var (name, shape) in manifest)
            tensors.Add(KeyValuePair.Create(name, Value(name, shape, generator)));
        return tensors;
    }

    private static Tensor Value(string name, long[] shape, Generator generator)
    {
        using var scope = NewDisposeScope();
        Tensor t;
        if (name.EndsWith("bias", StringComparison.Ordinal)) t = Uniform(shape, BiasBound, generator);
        else if (shape.Length <= 1) t = ones(shape, ScalarType.Float32);
        else
        {
            long fanIn = shape.Skip(1).Aggregate(1L, (a, b) => a * b);
            t = Uniform(shape, 1.0 / Math.Sqrt(fanIn), generator);
        }
        return t.MoveToOuterDisposeScope();
    }

    /// <summary>U(−bound, bound) in float32.</summary>
    public static Tensor Uniform(long[] shape, double bound, Generator generator)
    {
        using var scope = NewDisposeScope();
        return rand(shape, ScalarType.Float32, generator: generator).mul_(2 * bound).sub_(bound).MoveToOuterDisposeScope();
    }

    public static void Dispose(IEnumerable<KeyValuePair<string, Tensor>> tensors)
    {
        foreach (var (_, t) in tensors) t.Dispose();
    }
}
