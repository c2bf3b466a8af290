using OmniConsistency.Inference.Pipelines;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Imaging;

/// <summary>Where the photo lies inside the square condition image (the whole square for <see cref="ConditionFit.Stretch"/>).</summary>
public sealed record ConditionLayout(int Size, int ContentX, int ContentY, int ContentWidth, int ContentHeight);

/// <summary>
/// Turns the uploaded photo into OmniConsistency's condition image: a cond_size × cond_size square (cond_size rounded
/// down to a multiple of 16, as VaeImageProcessor does), resized with PIL's LANCZOS, as a [1, 3, S, S] tensor in [-1, 1].
/// </summary>
public static class ConditionImage
{
    /// <summary>
    /// Letterbox colour for <see cref="ConditionFit.Pad"/>: mid grey. It maps to ≈ 0 in the VAE's [-1, 1] input,
    /// the centre of its range, so the bars add no colour cast and no hard black/white edge at the photo's border
    /// that the consistency branch would carry into the output as structure.
    /// </summary>
    public static readonly (byte R, byte G, byte B) PadColor = (128, 128, 128);

    /// <summary>The square's side for a requested cond_size: rounded down to a multiple of 16.</summary>
    public static int SquareSize(int condSize)
    {
        int size = condSize - condSize % 16;
        if (size < 16) throw new ArgumentOutOfRangeException(nameof(condSize), condSize, "cond_size must be at least 16.");
        return size;
    }

    /// <summary>Where a <paramref name="width"/>×<paramref name="height"/> photo goes in the square.</summary>
    public static ConditionLayout Layout(int width, int height, int condSize, ConditionFit fit)
    {
        int size = SquareSize(condSize);
        if (fit == ConditionFit.Stretch) return new ConditionLayout(size, 0, 0, size, size);
        double scale = Math.Min((double)size / width, (double)size / height);
        int w = Math.Clamp((int)Math.Round(width * scale), 1, size);
        int h = Math.Clamp((int)Math.Round(height * scale), 1, size);
        return new ConditionLayout(size, (size - w) / 2, (size - h) / 2, w, h);
    }

    /// <summary>The square condition image: stretched (the reference) or letterboxed keeping the aspect ratio.</summary>
    public static RgbImage Fit(RgbImage photo, int condSize, ConditionFit fit)
    {
        var layout = Layout(photo.Width, photo.Height, condSize, fit);
        var resized = PilLanczos.Resize(photo, layout.ContentWidth, layout.ContentHeight);
        if (fit == ConditionFit.Stretch) return resized;
        var square = RgbImage.Filled(layout.Size, layout.Size, PadColor.R, PadColor.G, PadColor.B);
        square.Paste(resized, layout.ContentX, layout.ContentY);
        return square;
    }

    /// <summary>The condition tensor [1, 3, S, S], float32 in [-1, 1].</summary>
    public static Tensor Prepare(RgbImage photo, int condSize, ConditionFit fit, Device? device = null) =>
        ImageTensors.ToTensor(Fit(photo, condSize, fit), device);
}
