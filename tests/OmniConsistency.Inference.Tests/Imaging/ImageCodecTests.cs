using OmniConsistency.Inference.Imaging;
using OmniConsistency.Inference.Pipelines;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;

namespace OmniConsistency.Inference.Tests.Imaging;

public class ImageCodecTests
{
    private static readonly ImageCodec Codec = new();

    [Fact]
    public void PngAndLosslessWebpRoundTripExactly()
    {
        var image = HostileImageTests.Noise(37, 21, 4);
        var png = Codec.Encode(image, ImageOutputFormat.Png);
        Assert.Equal(new byte[] { 137, 80, 78, 71 }, png[..4]);
        Assert.Equal(image.Pixels, Codec.Decode(png).Pixels);

        var webp = Codec.Encode(image, ImageOutputFormat.Webp, new ImageEncodeOptions { WebpLossless = true });
        Assert.Equal("RIFF", System.Text.Encoding.ASCII.GetString(webp, 0, 4));
        Assert.Equal("WEBP", System.Text.Encoding.ASCII.GetString(webp, 8, 4));
        Assert.Equal(image.Pixels, Codec.Decode(webp).Pixels);
    }

    [Theory]
    [InlineData(ImageOutputFormat.Jpeg, "image/jpeg")]
    [InlineData(ImageOutputFormat.Webp, "image/webp")]
    public void LossyFormatsRoundTripClosely(ImageOutputFormat format, string contentType)
    {
        var image = Smooth(64, 48);
        var bytes = Codec.Encode(image, format);
        Assert.Equal(contentType, ImageCodec.ContentType(format));
        var decoded = Codec.Decode(bytes);
        Assert.Equal((64, 48), (decoded.Width, decoded.Height));
        double meanError = image.Pixels.Zip(decoded.Pixels).Average(p => Math.Abs(p.First - p.Second));
        Assert.True(meanError < 4, $"mean error {meanError}");
        if (format == ImageOutputFormat.Jpeg) Assert.Equal(new byte[] { 0xFF, 0xD8 }, bytes[..2]);
    }

    [Theory]
    [InlineData(1, 16, 8, "red-left")]
    [InlineData(6, 8, 16, "red-top")]     // rotate 90° clockwise: the left edge becomes the top
    [InlineData(8, 8, 16, "red-bottom")]  // rotate 90° counter-clockwise: the left edge becomes the bottom
    [InlineData(3, 16, 8, "red-right")]   // rotate 180°
    [InlineData(2, 16, 8, "red-right")]   // mirror horizontally
    public void ExifOrientationIsApplied(ushort orientation, int width, int height, string expected)
    {
        // A 16×8 JPEG, left half red and right half blue, tagged with an EXIF orientation.
        using var img = new Image<Rgb24>(16, 8);
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 16; x++)
                img[x, y] = x < 8 ? new Rgb24(255, 0, 0) : new Rgb24(0, 0, 255);
        img.Metadata.ExifProfile = new ExifProfile();
        img.Metadata.ExifProfile.SetValue(ExifTag.Orientation, orientation);
        using var ms = new MemoryStream();
        img.Save(ms, new JpegEncoder { Quality = 100 });

        var decoded = Codec.Decode(ms.ToArray());
        Assert.Equal((width, height), (decoded.Width, decoded.Height));
        bool Red(int x, int y) => decoded.Pixels[(y * decoded.Width + x) * 3] > 200 && decoded.Pixels[(y * decoded.Width + x) * 3 + 2] < 60;
        bool Blue(int x, int y) => decoded.Pixels[(y * decoded.Width + x) * 3] < 60 && decoded.Pixels[(y * decoded.Width + x) * 3 + 2] > 200;
        var (a, b) = expected switch
        {
            "red-left" => ((2, height / 2), (width - 3, height / 2)),
            "red-right" => ((width - 3, height / 2), (2, height / 2)),
            "red-top" => ((width / 2, 2), (width / 2, height - 3)),
            _ => ((width / 2, height - 3), (width / 2, 2)),
        };
        Assert.True(Red(a.Item1, a.Item2), $"expected red at {a}");
        Assert.True(Blue(b.Item1, b.Item2), $"expected blue at {b}");
    }

    [Fact]
    public void AlphaIsDroppedAndGreyIsExpandedToRgb()
    {
        using var rgba = new Image<Rgba32>(2, 1);
        rgba[0, 0] = new Rgba32(10, 20, 30, 0);
        rgba[1, 0] = new Rgba32(200, 100, 50, 128);
        using var ms = new MemoryStream();
        rgba.Save(ms, new PngEncoder());
        Assert.Equal(new byte[] { 10, 20, 30, 200, 100, 50 }, Codec.Decode(ms.ToArray()).Pixels);

        using var grey = new Image<L8>(1, 1);
        grey[0, 0] = new L8(77);
        using var ms2 = new MemoryStream();
        grey.Save(ms2, new PngEncoder { ColorType = PngColorType.Grayscale });
        Assert.Equal(new byte[] { 77, 77, 77 }, Codec.Decode(ms2.ToArray()).Pixels);
    }

    [Fact]
    public void IdentifyReadsTheHeaderOnly()
    {
        Assert.Equal((100_000, 100_000), Codec.Identify(PngBuilder.Rgb(100_000, 100_000, 1)));
    }

    private static RgbImage Smooth(int w, int h)
    {
        var image = new RgbImage(w, h);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                int o = (y * w + x) * 3;
                image.Pixels[o] = (byte)(x * 255 / (w - 1));
                image.Pixels[o + 1] = (byte)(y * 255 / (h - 1));
                image.Pixels[o + 2] = 128;
            }
        return image;
    }
}
