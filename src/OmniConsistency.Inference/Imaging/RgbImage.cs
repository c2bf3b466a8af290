namespace OmniConsistency.Inference.Imaging;

/// <summary>An 8-bit RGB image, rows top to bottom, pixels interleaved R, G, B (PIL's "RGB" mode, HWC).</summary>
public sealed class RgbImage
{
    public RgbImage(int width, int height, byte[] pixels)
    {
        if (width <= 0 || height <= 0) throw new ArgumentException($"Image size {width}×{height} must be positive.");
        if (pixels.LongLength != 3L * width * height)
            throw new ArgumentException($"A {width}×{height} RGB image needs {3L * width * height} bytes; got {pixels.LongLength}.", nameof(pixels));
        Width = width;
        Height = height;
        Pixels = pixels;
    }

    public RgbImage(int width, int height) : this(width, height, new byte[checked(3 * width * height)]) { }

    public int Width { get; }
    public int Height { get; }
    /// <summary>Row-major RGB bytes; index of channel c of pixel (x, y) = (y·Width + x)·3 + c.</summary>
    public byte[] Pixels { get; }

    public static RgbImage Filled(int width, int height, byte r, byte g, byte b)
    {
        var image = new RgbImage(width, height);
        var p = image.Pixels;
        for (int i = 0; i < p.Length; i += 3)
        {
            p[i] = r;
            p[i + 1] = g;
            p[i + 2] = b;
        }
        return image;
    }

    public RgbImage Clone() => new(Width, Height, (byte[])Pixels.Clone());

    /// <summary>Copies <paramref name="source"/> into this image with its top-left corner at (x, y); it must fit.</summary>
    public void Paste(RgbImage source, int x, int y)
    {
        if (x < 0 || y < 0 || x + source.Width > Width || y + source.Height > Height)
            throw new ArgumentException($"A {source.Width}×{source.Height} image at ({x},{y}) does not fit in {Width}×{Height}.");
        for (int row = 0; row < source.Height; row++)
            Array.Copy(source.Pixels, row * source.Width * 3, Pixels, ((y + row) * Width + x) * 3, source.Width * 3);
    }
}
