namespace OmniConsistency.Inference.Imaging;

/// <summary>
/// Caps applied to uploaded images before and while decoding. The header is read first (no pixels) and checked
/// against the size caps, so a small file that declares a huge image is refused without allocating it; the
/// allocation limit is a second fence inside the decoder itself.
/// </summary>
public sealed record ImageLimits
{
    /// <summary>Largest encoded upload in bytes.</summary>
    public long MaxEncodedBytes { get; init; } = 50L * 1024 * 1024;
    /// <summary>Largest width or height in pixels (after EXIF orientation the same cap applies to both sides).</summary>
    public int MaxSide { get; init; } = 10_000;
    /// <summary>Largest width × height: 50 MP admits 48 MP phone photos (8000×6000).</summary>
    public long MaxPixels { get; init; } = 50_000_000;
    /// <summary>The decoder's memory allocator refuses any single pixel buffer larger than this.</summary>
    public int MaxAllocationMegabytes { get; init; } = 512;

    public static ImageLimits Default { get; } = new();

    public void Validate()
    {
        if (MaxEncodedBytes <= 0 || MaxSide <= 0 || MaxPixels <= 0 || MaxAllocationMegabytes <= 0)
            throw new ArgumentException($"Image limits must be positive: {this}.");
    }
}
