namespace OmniConsistency.Inference.Imaging;

/// <summary>
/// PIL's <c>Image.resize(size, Image.LANCZOS)</c> for 8-bit RGB, bit for bit (Pillow src/libImaging/Resample.c):
/// a separable filter, horizontal pass first into an 8-bit temporary, then vertical; a pass is skipped when its
/// dimension is unchanged, and same size is a copy. Weights are a Lanczos-3 window computed in double precision,
/// normalised per output pixel, then rounded to 22-bit fixed point; each channel accumulates
/// 2^21 + Σ pixel·weight in 32-bit integers and is clipped to 0..255 after an arithmetic shift by 22.
/// ImageSharp's Lanczos3 differs (float weights, other rounding and support), so the reference's condition
/// pixels are only reproduced by this port.
/// </summary>
public static class PilLanczos
{
    private const int PrecisionBits = 32 - 8 - 2;
    private const double Support = 3.0;

    public static RgbImage Resize(RgbImage source, int width, int height)
    {
        if (width <= 0 || height <= 0) throw new ArgumentException($"Target size {width}×{height} must be positive.");
        if (width == source.Width && height == source.Height) return source.Clone();

        bool needHorizontal = width != source.Width;
        bool needVertical = height != source.Height;
        var vertical = Coefficients(source.Height, height);
        // Only the source rows the vertical pass reads are resampled horizontally (as Pillow does).
        int firstRow = vertical.Bounds[0];
        int lastRow = vertical.Bounds[2 * height - 2] + vertical.Bounds[2 * height - 1];

        var image = source;
        if (needHorizontal)
        {
            for (int i = 0; i < height; i++) vertical.Bounds[2 * i] -= firstRow;
            image = Horizontal(source, width, firstRow, lastRow - firstRow, Coefficients(source.Width, width));
        }
        if (needVertical) image = Vertical(image, height, vertical);
        return image;
    }

    private sealed record Filter(int KernelSize, int[] Bounds, int[] Weights);

    /// <summary>Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis.</summary>
    private static Filter Coefficients(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = Support * filterScale;
        int kernelSize = (int)Math.Ceiling(support) * 2 + 1;
        var bounds = new int[outSize * 2];
        var weights = new int[checked(outSize * kernelSize)];
        var k = new double[kernelSize];
        double ss = 1.0 / filterScale;
        for (int xx = 0; xx < outSize; xx++)
        {
            double center = (xx + 0.5) * scale;
            int xmin = Math.Max((int)(center - support + 0.5), 0);
            int xmax = Math.Min((int)(center + support + 0.5), inSize) - xmin;
            double sum = 0.0;
            for (int x = 0; x < xmax; x++)
            {
                double w = Lanczos((x + xmin - center + 0.5) * ss);
                k[x] = w;
                sum += w;
            }
            for (int x = 0; x < xmax; x++)
            {
                double w = sum != 0.0 ? k[x] / sum : k[x];
                weights[xx * kernelSize + x] = w < 0
                    ? (int)(-0.5 + w * (1 << PrecisionBits))
                    : (int)(0.5 + w * (1 << PrecisionBits));
            }
            bounds[2 * xx] = xmin;
            bounds[2 * xx + 1] = xmax;
        }
        return new Filter(kernelSize, bounds, weights);
    }

    private static double Sinc(double x)
    {
        if (x == 0.0) return 1.0;
        x *= Math.PI;
        return Math.Sin(x) / x;
    }

    private static double Lanczos(double x) => -3.0 <= x && x < 3.0 ? Sinc(x) * Sinc(x / 3) : 0.0;

    private static byte Clip8(int accumulator)
    {
        int v = accumulator >> PrecisionBits;
        return v < 0 ? (byte)0 : v > 255 ? (byte)255 : (byte)v;
    }

    private static RgbImage Horizontal(RgbImage src, int width, int rowOffset, int rows, Filter f)
    {
        var dst = new RgbImage(width, rows);
        byte[] s = src.Pixels, d = dst.Pixels;
        for (int yy = 0; yy < rows; yy++)
        {
            int srcRow = (yy + rowOffset) * src.Width * 3;
            for (int xx = 0; xx < width; xx++)
            {
                int xmin = f.Bounds[2 * xx], xmax = f.Bounds[2 * xx + 1], k = xx * f.KernelSize;
                int s0 = 1 << (PrecisionBits - 1), s1 = s0, s2 = s0;
                for (int x = 0; x < xmax; x++)
                {
                    int p = srcRow + (x + xmin) * 3, w = f.Weights[k + x];
                    s0 += s[p] * w;
                    s1 += s[p + 1] * w;
                    s2 += s[p + 2] * w;
                }
                int o = (yy * width + xx) * 3;
                d[o] = Clip8(s0);
                d[o + 1] = Clip8(s1);
                d[o + 2] = Clip8(s2);
            }
        }
        return dst;
    }

    private static RgbImage Vertical(RgbImage src, int height, Filter f)
    {
        int width = src.Width;
        var dst = new RgbImage(width, height);
        byte[] s = src.Pixels, d = dst.Pixels;
        for (int yy = 0; yy < height; yy++)
        {
            int ymin = f.Bounds[2 * yy], ymax = f.Bounds[2 * yy + 1], k = yy * f.KernelSize;
            for (int xx = 0; xx < width; xx++)
            {
                int s0 = 1 << (PrecisionBits - 1), s1 = s0, s2 = s0;
                for (int y = 0; y < ymax; y++)
                {
                    int p = ((y + ymin) * width + xx) * 3, w = f.Weights[k + y];
                    s0 += s[p] * w;
                    s1 += s[p + 1] * w;
                    s2 += s[p + 2] * w;
                }
                int o = (yy * width + xx) * 3;
                d[o] = Clip8(s0);
                d[o + 1] = Clip8(s1);
                d[o + 2] = Clip8(s2);
            }
        }
        return dst;
    }
}
