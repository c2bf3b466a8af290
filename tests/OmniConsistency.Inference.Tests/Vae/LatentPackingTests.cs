using OmniConsistency.Inference.Vae;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Vae;

public class LatentPackingTests
{
    [Fact]
    public void PackPutsTwoByTwoPatchesRowMajorWithChannelMajorFeatures()
    {
        using var scope = NewDisposeScope();
        var z = arange(2 * 3 * 4 * 6, dtype: ScalarType.Float32).view(2, 3, 4, 6);
        var packed = LatentPacking.Pack(z);
        Assert.Equal([2L, 6, 12], packed.shape);
        // token (row r, col c) of the 2×3 grid, feature ch·4 + dy·2 + dx = z[b, ch, 2r+dy, 2c+dx]
        for (int b = 0; b < 2; b++)
            for (int r = 0; r < 2; r++)
                for (int c = 0; c < 3; c++)
                    for (int ch = 0; ch < 3; ch++)
                        for (int dy = 0; dy < 2; dy++)
                            for (int dx = 0; dx < 2; dx++)
                                Assert.Equal(z[b, ch, 2 * r + dy, 2 * c + dx].item<float>(), packed[b, r * 3 + c, ch * 4 + dy * 2 + dx].item<float>());
        TensorAssert.Equal(z, LatentPacking.UnpackGrid(packed, 2, 3));
    }

    [Theory]
    [InlineData(48, 80, 6, 10)]
    [InlineData(64, 64, 8, 8)]
    [InlineData(1024, 680, 128, 84)]
    [InlineData(50, 33, 6, 4)]
    public void UnpackUsesOmniConsistencysFactor16(int height, int width, int h, int w)
    {
        using var scope = NewDisposeScope();
        Assert.Equal((h, w), LatentPacking.LatentSize(height, width));
        var z = randn(2, 16, h, w);
        var packed = LatentPacking.Pack(z);
        Assert.Equal([2L, h / 2 * (w / 2), 64], packed.shape);
        TensorAssert.Equal(z, LatentPacking.Unpack(packed, height, width));
    }

    [Fact]
    public void WrongShapesAreRefused()
    {
        using var scope = NewDisposeScope();
        Assert.Throws<ArgumentException>(() => LatentPacking.Pack(zeros(1, 16, 3, 4)));
        Assert.Throws<ArgumentException>(() => LatentPacking.Pack(zeros(16, 4, 4)));
        Assert.Throws<ArgumentException>(() => LatentPacking.Unpack(zeros(1, 15, 64), 64, 64));
        Assert.Throws<ArgumentException>(() => LatentPacking.Unpack(zeros(1, 16, 62), 64, 64));
        Assert.Throws<ArgumentException>(() => LatentPacking.LatentSize(8, 64));
    }
}
