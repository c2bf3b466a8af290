using System.Text;
using OmniConsistency.Inference.Imaging;
using OmniConsistency.Inference.Pipelines;
using Xunit;

namespace OmniConsistency.Inference.Tests.Imaging;

/// <summary>Hostile uploads end in a typed request error, decided from the header, without allocating the declared image.</summary>
public class HostileImageTests
{
    private static readonly ImageCodec Codec = new();

    /// <summary>Runs <paramref name="action"/>, returns its exception and the managed bytes it allocated.</summary>
    private static (T Exception, long Allocated) Catch<T>(Action action) where T : Exception
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<T>(action);
        return (e, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void ZeroBytesAreAnInvalidImage()
    {
        var (e, allocated) = Catch<InvalidImageException>(() => Codec.Decode([]));
        Assert.True(allocated < 4_000_000, $"allocated {allocated} bytes");
        Assert.Equal("invalid-image", e.ErrorType);
        Assert.IsAssignableFrom<StylizationRequestException>(e);
        Assert.Contains("empty", e.Message);
    }

    [Fact]
    public void ANonImageWithAPngNameIsAnInvalidImage()
    {
        var path = Path.Combine(Directory.CreateTempSubdirectory("hostile").FullName, "photo.png");
        File.WriteAllText(path, "<html><body>definitely not a picture</body></html>\n" + new string('x', 5000));
        var bytes = File.ReadAllBytes(path);
        var (e, allocated) = Catch<InvalidImageException>(() => Codec.Decode(bytes));
        Assert.True(allocated < 4_000_000, $"allocated {allocated} bytes");
        Assert.Contains("not a PNG, JPEG or WebP", e.Message);
    }

    [Fact]
    public void AFormatThatIsNotAcceptedIsAnInvalidImage()
    {
        // A BMP header: a real image format, but not one the service decodes.
        var bmp = new byte[64];
        Encoding.ASCII.GetBytes("BM").CopyTo(bmp, 0);
        Assert.Throws<InvalidImageException>(() => Codec.Decode(bmp));
    }

    [Theory]
    [InlineData(8)]      // signature only
    [InlineData(20)]     // inside IHDR
    [InlineData(0.5)]    // half the pixel data
    [InlineData(-40)]    // the end of the pixel data and IEND missing
    public void TruncatedPngIsAnInvalidImage(double cut)
    {
        var full = Codec.Encode(Noise(64, 48, 1), ImageOutputFormat.Png);
        int length = cut >= 1 ? (int)cut : cut > 0 ? (int)(full.Length * cut) : full.Length + (int)cut;
        var truncated = full[..length];
        var (e, allocated) = Catch<InvalidImageException>(() => Codec.Decode(truncated));
        Assert.True(allocated < 4_000_000, $"allocated {allocated} bytes");
        Assert.Equal("invalid-image", e.ErrorType);
    }

    [Theory]
    [InlineData(ImageOutputFormat.Jpeg, 3)]
    [InlineData(ImageOutputFormat.Jpeg, 1.01)]
    [InlineData(ImageOutputFormat.Webp, 2)]
    [InlineData(ImageOutputFormat.Webp, 1.01)]
    public void TruncatedJpegAndWebpAreInvalidImages(ImageOutputFormat format, double fraction)
    {
        // ImageSharp's JPEG decoder would fill a cut scan with grey; the codec checks the marker stream first.
        var full = Codec.Encode(Noise(64, 48, 2), format);
        Assert.Equal(64, Codec.Decode(full).Width);
        var e = Assert.Throws<InvalidImageException>(() => Codec.Decode(full[..(int)(full.Length / fraction)]));
        Assert.Equal("invalid-image", e.ErrorType);
    }

    [Fact]
    public void AnEmbeddedThumbnailsEndMarkerDoesNotHideATruncatedJpeg()
    {
        // Thumbnails (EXIF, MPF) are whole JPEGs inside an APPn segment, with their own end marker; cutting the main
        // image after them must still count as truncated, so segments are skipped by length, not searched.
        var thumbnail = Codec.Encode(Noise(8, 8, 3), ImageOutputFormat.Jpeg);
        var main = Codec.Encode(Noise(64, 48, 2), ImageOutputFormat.Jpeg);
        var segment = new byte[] { 0xFF, 0xE2, (byte)((thumbnail.Length + 2) >> 8), (byte)(thumbnail.Length + 2) };
        var spliced = main[..2].Concat(segment).Concat(thumbnail).Concat(main[2..]).ToArray();
        Assert.Equal(64, Codec.Decode(spliced).Width);
        Assert.Throws<InvalidImageException>(() => Codec.Decode(spliced[..(spliced.Length - 30)]));
    }

    [Fact]
    public void OneByHundredThousandPngIsTooLarge()
    {
        var png = PngBuilder.Rgb(1, 100_000, 100_000);
        Assert.True(png.Length < 10_000); // a valid, tiny file
        var (e, allocated) = Catch<ImageTooLargeException>(() => Codec.Decode(png));
        Assert.Equal("image-too-large", e.ErrorType);
        Assert.Contains("1×100000", e.Message);
        Assert.True(allocated < 4_000_000, $"allocated {allocated} bytes");
    }

    [Fact]
    public void DecompressionBombIsRefusedFromItsHeader()
    {
        // 100000×100000 RGB would be 30 GB of pixels; the file is a few hundred bytes.
        var bomb = PngBuilder.Rgb(100_000, 100_000, 2);
        Assert.True(bomb.Length < 2_000);
        var (e, allocated) = Catch<ImageTooLargeException>(() => Codec.Decode(bomb));
        Assert.Contains("100000×100000", e.Message);
        Assert.True(allocated < 4_000_000, $"allocated {allocated} bytes");
    }

    [Fact]
    public void BombWithinTheSideCapIsRefusedByThePixelCap()
    {
        var bomb = PngBuilder.Rgb(9_000, 9_000, 1); // 81 MP > the 50 MP default
        var (e, allocated) = Catch<ImageTooLargeException>(() => Codec.Decode(bomb));
        Assert.Contains("81000000", e.Message);
        Assert.True(allocated < 4_000_000, $"allocated {allocated} bytes");
    }

    [Fact]
    public void TheDecodersAllocatorEnforcesItsOwnLimit()
    {
        // Caps opened wide: the allocator's 1 MB single-buffer limit alone must stop a 2000×2000 decode (12 MB).
        var codec = new ImageCodec(new ImageLimits { MaxSide = 1_000_000, MaxPixels = long.MaxValue, MaxAllocationMegabytes = 1 });
        var png = PngBuilder.Rgb(2000, 2000, 2000);
        var (e, allocated) = Catch<ImageTooLargeException>(() => codec.Decode(png));
        Assert.Contains("1 MB", e.Message);
        Assert.True(allocated < 8_000_000, $"allocated {allocated} bytes");
    }

    [Fact]
    public void OversizedUploadsAreRefusedBeforeParsing()
    {
        var codec = new ImageCodec(new ImageLimits { MaxEncodedBytes = 1000 });
        var e = Assert.Throws<ImageTooLargeException>(() => codec.Decode(new byte[1001]));
        Assert.Contains("1001 bytes", e.Message);
    }

    [Fact]
    public void AnimatedWebpIsRefused()
    {
        // RIFF/WEBP with a VP8X chunk whose flags carry the animation bit.
        var webp = new byte[64];
        Encoding.ASCII.GetBytes("RIFF").CopyTo(webp, 0);
        BitConverter.GetBytes(56).CopyTo(webp, 4);
        Encoding.ASCII.GetBytes("WEBPVP8X").CopyTo(webp, 8);
        BitConverter.GetBytes(10).CopyTo(webp, 16);
        webp[20] = 0x02;
        webp[24] = 99; // canvas width − 1 (24-bit)
        webp[27] = 99; // canvas height − 1
        Assert.Throws<InvalidImageException>(() => Codec.Decode(webp));
    }

    [Fact]
    public void ValidImagesAtTheCapsDecode()
    {
        var codec = new ImageCodec(new ImageLimits { MaxSide = 64, MaxPixels = 64 * 32 });
        var image = codec.Decode(PngBuilder.Rgb(64, 32, 32));
        Assert.Equal((64, 32), (image.Width, image.Height));
        Assert.All(image.Pixels, b => Assert.Equal(0, b));
        Assert.Throws<ImageTooLargeException>(() => codec.Decode(PngBuilder.Rgb(64, 33, 33)));
        Assert.Throws<ImageTooLargeException>(() => codec.Decode(PngBuilder.Rgb(65, 2, 2)));
    }

    internal static RgbImage Noise(int w, int h, int seed)
    {
        var bytes = new byte[w * h * 3];
        new Random(seed).NextBytes(bytes);
        return new RgbImage(w, h, bytes);
    }
}
