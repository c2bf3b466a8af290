using OmniConsistency.Inference.Imaging;
using OmniConsistency.Inference.Pipelines;
using OmniConsistency.Inference.Tests.Golden;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Imaging;

public class ConditionImageTests
{
    [Fact]
    public void StretchIsPillowsLanczosToTheSquare()
    {
        var photo = HostileImageTests.Noise(90, 50, 1);
        var square = ConditionImage.Fit(photo, 64, ConditionFit.Stretch);
        Assert.Equal((64, 64), (square.Width, square.Height));
        Assert.Equal(PilLanczos.Resize(photo, 64, 64).Pixels, square.Pixels);
        // cond_size is rounded down to a multiple of 16, as VaeImageProcessor does.
        Assert.Equal(96, ConditionImage.Fit(photo, 100, ConditionFit.Stretch).Width);
        Assert.Throws<ArgumentOutOfRangeException>(() => ConditionImage.Fit(photo, 15, ConditionFit.Stretch));
    }

    [Fact]
    public void PadLetterboxesKeepingTheAspectRatio()
    {
        var photo = RgbImage.Filled(200, 100, 255, 0, 0);
        var layout = ConditionImage.Layout(200, 100, 64, ConditionFit.Pad);
        Assert.Equal(new ConditionLayout(64, 0, 16, 64, 32), layout);
        var square = ConditionImage.Fit(photo, 64, ConditionFit.Pad);
        byte[] At(int x, int y) => square.Pixels.AsSpan((y * 64 + x) * 3, 3).ToArray();
        Assert.Equal(new byte[] { 128, 128, 128 }, At(10, 5));
        Assert.Equal(new byte[] { 128, 128, 128 }, At(10, 60));
        Assert.Equal(new byte[] { 255, 0, 0 }, At(10, 16));
        Assert.Equal(new byte[] { 255, 0, 0 }, At(63, 47));

        Assert.Equal(new ConditionLayout(512, 192, 0, 128, 512), ConditionImage.Layout(300, 1200, 512, ConditionFit.Pad));
        Assert.Equal(new ConditionLayout(512, 0, 0, 512, 512), ConditionImage.Layout(777, 777, 512, ConditionFit.Pad));
        Assert.Equal(new ConditionLayout(64, 0, 31, 64, 1), ConditionImage.Layout(10_000, 1, 64, ConditionFit.Pad));
    }

    [Fact]
    public void PreparedTensorIsInMinusOneToOne()
    {
        using var scope = NewDisposeScope();
        var photo = new RgbImage(16, 16);
        photo.Pixels[0] = 255;
        photo.Pixels[4] = 51;
        var x = ConditionImage.Prepare(photo, 16, ConditionFit.Stretch);
        Assert.Equal([1L, 3, 16, 16], x.shape);
        Assert.Equal(ScalarType.Float32, x.dtype);
        Assert.Equal(1f, x[0, 0, 0, 0].item<float>());
        Assert.Equal(-1f, x[0, 1, 0, 0].item<float>());
        Assert.Equal(51f / 255f * 2f - 1f, x[0, 1, 0, 1].item<float>());
    }

    /// <summary>The e2e cases' condition image: cond.png (already cond_size²) preprocessed by the reference.</summary>
    [Theory]
    [InlineData("pipeline_e2e")]
    [InlineData("pipeline_e2e_64x96")]
    [InlineData("pipeline_e2e_style")]
    public void MatchesTheReferencePreprocessingOfCondPng(string caseName)
    {
        var dir = Path.Combine(GoldenRoot.Path, "cases", caseName);
        if (!Directory.Exists(dir)) Assert.Skip($"the golden set at {GoldenRoot.Path} (OMNI_GOLDEN_DIR) has no case {caseName}");
        using var c = new GoldenCase(GoldenRoot.Path, caseName);
        using var scope = NewDisposeScope();
        int condSize = c.Params.GetProperty("cond_size").GetInt32();
        var photo = new ImageCodec().Decode(File.ReadAllBytes(Path.Combine(dir, "cond.png")));
        var x = ConditionImage.Prepare(photo, condSize, ConditionFit.Stretch);
        TensorAssert.Equal(c.Input("cond_image"), x, "condition image");
    }

    /// <summary>The e2e cases' expected.png is the reference's 8-bit conversion of its expected image tensor.</summary>
    [Theory]
    [InlineData("pipeline_e2e")]
    [InlineData("pipeline_e2e_64x96")]
    [InlineData("pipeline_e2e_style")]
    public void EightBitConversionMatchesTheReferencePng(string caseName)
    {
        var dir = Path.Combine(GoldenRoot.Path, "cases", caseName);
        if (!Directory.Exists(dir)) Assert.Skip($"the golden set at {GoldenRoot.Path} (OMNI_GOLDEN_DIR) has no case {caseName}");
        var png = Path.Combine(dir, "expected.png");
        using var c = new GoldenCase(GoldenRoot.Path, caseName);
        using var scope = NewDisposeScope();
        var ours = ImageTensors.ToImages(c.Expected("image"))[0];
        var reference = new ImageCodec().Decode(File.ReadAllBytes(png));
        Assert.Equal((reference.Width, reference.Height), (ours.Width, ours.Height));
        Assert.Equal(reference.Pixels, ours.Pixels);
    }

    [Fact]
    public void TensorsBecomeEightBitWithRoundingAndClipping()
    {
        using var scope = NewDisposeScope();
        var t = tensor(new float[] { 0f, 1f, 0.5f, 0.25f, 0.75f, -0.2f, 1.7f, float.NaN, 0.1f, 0.2f, 0.31f, 0.4f }).view(2, 3, 1, 2);
        var images = ImageTensors.ToImages(t);
        Assert.Equal(2, images.Length);
        Assert.Equal((2, 1), (images[0].Width, images[0].Height));
        // pixel (x, 0) of image 0 = channels (t[0,0,0,x], t[0,1,0,x], t[0,2,0,x])
        Assert.Equal(new byte[] { 0, 128, 191, 255, 64, 0 }, images[0].Pixels);
        Assert.Equal(new byte[] { 255, 26, 79, 0, 51, 102 }, images[1].Pixels);

        var roundTrip = ImageTensors.ToImages(ImageTensors.Denormalize(ImageTensors.ToTensor(HostileImageTests.Noise(5, 4, 9))));
        Assert.Equal(HostileImageTests.Noise(5, 4, 9).Pixels, roundTrip[0].Pixels);
    }

    [Theory]
    [InlineData(1000, 1000, 1024, 1024)]
    [InlineData(4000, 3000, 1184, 880)]
    [InlineData(3000, 4000, 880, 1184)]
    [InlineData(1920, 1080, 1360, 768)]
    [InlineData(100, 8000, 32, 2048)]
    [InlineData(640, 480, 1184, 880)]
    public void DefaultOutputSizeKeepsTheAspectAtAboutOneMegapixel(int w, int h, int ew, int eh)
    {
        var (ow, oh) = OutputSize.ForAspect(w, h);
        Assert.Equal((ew, eh), (ow, oh));
        Assert.True(ow % 16 == 0 && oh % 16 == 0);
        Assert.True(ow <= 2048 && oh <= 2048);
    }

    [Fact]
    public void OutputSizeRespectsTargetAndCap()
    {
        var (w, h) = OutputSize.ForAspect(3, 2, targetPixels: 512 * 512, maxSide: 600);
        Assert.Equal((592, 400), (w, h));
        Assert.Throws<ArgumentException>(() => OutputSize.ForAspect(0, 5));
    }
}
