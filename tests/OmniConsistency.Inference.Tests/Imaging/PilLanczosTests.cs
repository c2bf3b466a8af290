using System.IO.Compression;
using System.Text.Json;
using OmniConsistency.Inference.Imaging;
using OmniConsistency.Inference.Tests.Golden;
using Xunit;

namespace OmniConsistency.Inference.Tests.Imaging;

public class PilLanczosTests
{
    private static readonly string FixturePath = Path.Combine(RepositoryRoot.Path, "tests", "OmniConsistency.Inference.Tests", "Imaging", "Fixtures", "pil_lanczos.json.gz");

    public static IEnumerable<TheoryDataRow<int>> FixtureCases() =>
        Enumerable.Range(0, ReadFixtures().Count).Select(i => new TheoryDataRow<int>(i));

    private static List<JsonElement> ReadFixtures()
    {
        using var gz = new GZipStream(File.OpenRead(FixturePath), CompressionMode.Decompress);
        using var doc = JsonDocument.Parse(gz);
        return doc.RootElement.GetProperty("cases").EnumerateArray().Select(e => e.Clone()).ToList();
    }

    /// <summary>Outputs of Pillow's own Image.resize(LANCZOS) (see Fixtures/make_pil_lanczos.py), byte for byte.</summary>
    [Theory]
    [MemberData(nameof(FixtureCases))]
    public void MatchesPillowByteForByte(int index)
    {
        var c = ReadFixtures()[index];
        var source = new RgbImage(c.GetProperty("source_width").GetInt32(), c.GetProperty("source_height").GetInt32(), c.GetProperty("source").GetBytesFromBase64());
        int w = c.GetProperty("width").GetInt32(), h = c.GetProperty("height").GetInt32();
        var expected = c.GetProperty("expected").GetBytesFromBase64();
        var actual = PilLanczos.Resize(source, w, h);
        Assert.Equal((w, h), (actual.Width, actual.Height));
        int differing = expected.Zip(actual.Pixels).Count(p => p.First != p.Second);
        Assert.True(differing == 0, $"{source.Width}×{source.Height} → {w}×{h}: {differing} of {expected.Length} bytes differ from Pillow");
    }

    [Fact]
    public void SameSizeIsACopy()
    {
        var source = Random(13, 7, 1);
        var copy = PilLanczos.Resize(source, 13, 7);
        Assert.NotSame(source.Pixels, copy.Pixels);
        Assert.Equal(source.Pixels, copy.Pixels);
    }

    [Fact]
    public void HalvingTwoPixelsAveragesWithRoundHalfUp()
    {
        // 2 → 1: centre 1.0, both taps at distance 0.25·(1/2) of the (×2 widened) kernel, equal weights 2^21 each,
        // so out = (a·2^21 + b·2^21 + 2^21) >> 22 = ⌊(a + b + 1) / 2⌋.
        var source = new RgbImage(2, 1, [10, 0, 200, 21, 255, 201]);
        Assert.Equal(new byte[] { 16, 128, 201 }, PilLanczos.Resize(source, 1, 1).Pixels);
    }

    [Theory]
    [InlineData(40, 30, 17, 64)]
    [InlineData(5, 5, 512, 3)]
    [InlineData(300, 2, 7, 9)]
    public void ConstantImagesStayConstant(int w, int h, int tw, int th)
    {
        var source = RgbImage.Filled(w, h, 0, 77, 255);
        var resized = PilLanczos.Resize(source, tw, th);
        for (int i = 0; i < resized.Pixels.Length; i += 3)
            Assert.Equal((0, 77, 255), (resized.Pixels[i], resized.Pixels[i + 1], resized.Pixels[i + 2]));
    }

    [Theory]
    [InlineData(16, 8, 8, 4)]
    [InlineData(8, 6, 32, 24)]
    [InlineData(12, 12, 3, 6)]
    public void MirroringCommutesWithResizeForExactRatios(int w, int h, int tw, int th)
    {
        // With integer size ratios the sample centres and tap offsets are exact in binary, so the weights of
        // mirrored outputs are mirrored exactly and the fixed-point result must be too.
        var source = Random(w, h, 3);
        var a = Mirror(PilLanczos.Resize(Mirror(source), tw, th));
        var b = PilLanczos.Resize(source, tw, th);
        Assert.Equal(b.Pixels, a.Pixels);
    }

    private static RgbImage Random(int w, int h, int seed)
    {
        var bytes = new byte[w * h * 3];
        new Random(seed).NextBytes(bytes);
        return new RgbImage(w, h, bytes);
    }

    private static RgbImage Mirror(RgbImage image)
    {
        var result = new RgbImage(image.Width, image.Height);
        for (int y = 0; y < image.Height; y++)
            for (int x = 0; x < image.Width; x++)
                Array.Copy(image.Pixels, (y * image.Width + x) * 3, result.Pixels, (y * image.Width + image.Width - 1 - x) * 3, 3);
        return result;
    }
}
