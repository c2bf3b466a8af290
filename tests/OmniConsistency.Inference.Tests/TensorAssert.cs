using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests;

public static class TensorAssert
{
    /// <summary>Same shape and bit-identical values (NaN never equal).</summary>
    public static bool Identical(Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape) || a.dtype != b.dtype) return false;
        using var scope = NewDisposeScope();
        return a.eq(b).all().item<bool>();
    }

    /// <summary>Same shape, dtype and every element bit-for-bit equal.</summary>
    public static bool TensorsEqual(Tensor a, Tensor b) => Identical(a, b);

    public static void Equal(Tensor expected, Tensor actual, string? what = null) =>
        Assert.True(Identical(expected, actual), $"{what ?? "tensors"} differ: [{string.Join(",", expected.shape)}] {expected.dtype} vs [{string.Join(",", actual.shape)}] {actual.dtype}");
}
