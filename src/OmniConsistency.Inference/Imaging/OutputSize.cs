namespace OmniConsistency.Inference.Imaging;

/// <summary>The default output size: the photo's aspect ratio at about one megapixel, in multiples of 16.</summary>
public static class OutputSize
{
    public const long DefaultPixels = 1024L * 1024;
    public const int Multiple = 16;

    /// <summary>
    /// Width and height with the aspect of <paramref name="sourceWidth"/>×<paramref name="sourceHeight"/>, area
    /// about <paramref name="targetPixels"/>, each a multiple of 16 in [16, <paramref name="maxSide"/>]. When the
    /// long side would exceed the cap the whole size shrinks, keeping the aspect (then the area is below target).
    /// </summary>
    public static (int Width, int Height) ForAspect(int sourceWidth, int sourceHeight, long targetPixels = DefaultPixels, int maxSide = 2048)
    {
        if (sourceWidth <= 0 || sourceHeight <= 0) throw new ArgumentException($"Source size {sourceWidth}×{sourceHeight} must be positive.");
        if (targetPixels < Multiple * Multiple) throw new ArgumentOutOfRangeException(nameof(targetPixels), targetPixels, "at least one 16×16 patch");
        if (maxSide < Multiple) throw new ArgumentOutOfRangeException(nameof(maxSide), maxSide, "at least 16");
        double aspect = (double)sourceWidth / sourceHeight;
        double w = Math.Sqrt(targetPixels * aspect), h = Math.Sqrt(targetPixels / aspect);
        double shrink = Math.Min(1.0, maxSide / Math.Max(w, h));
        return (Snap(w * shrink, maxSide), Snap(h * shrink, maxSide));
    }

    private static int Snap(double side, int maxSide)
    {
        int cap = maxSide - maxSide % Multiple;
        int snapped = (int)Math.Round(side / Multiple, MidpointRounding.AwayFromZero) * Multiple;
        return Math.Clamp(snapped, Multiple, cap);
    }
}
