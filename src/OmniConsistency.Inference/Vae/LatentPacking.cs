using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Vae;

/// <summary>
/// FLUX's 2×2 latent packing, as OmniConsistency's pipeline does it (_pack_latents / _unpack_latents):
/// [B, C, h, w] ↔ [B, (h/2)(w/2), 4C], tokens row-major over the (h/2, w/2) grid, feature = c·4 + dy·2 + dx.
/// OmniConsistency's vae_scale_factor is 2^len(block_out_channels) = 16 for FLUX, so an image of H×W pixels has
/// an unpacked latent of 2·⌊H/16⌋ × 2·⌊W/16⌋.
/// </summary>
public static class LatentPacking
{
    /// <summary>OmniConsistency's vae_scale_factor for FLUX's 4-level VAE: pixels per packed token side.</summary>
    public const int FluxPackedScale = 16;

    /// <summary>The unpacked latent size for an image of <paramref name="height"/>×<paramref name="width"/> pixels.</summary>
    public static (int Height, int Width) LatentSize(int height, int width, int packedScale = FluxPackedScale)
    {
        if (height <= 0 || width <= 0 || packedScale <= 0)
            throw new ArgumentException($"Image size {height}×{width} and scale {packedScale} must be positive.");
        if (height < packedScale || width < packedScale)
            throw new ArgumentException($"Image size {height}×{width} is smaller than one {packedScale}-pixel latent patch.");
        return (2 * (height / packedScale), 2 * (width / packedScale));
    }

    /// <summary>[B, C, h, w] (h, w even) → [B, (h/2)(w/2), 4C].</summary>
    public static Tensor Pack(Tensor latents)
    {
        if (latents.dim() != 4 || latents.shape[2] % 2 != 0 || latents.shape[3] % 2 != 0)
            throw new ArgumentException($"Latents to pack must be [B, C, h, w] with even h and w; got [{string.Join(",", latents.shape)}].", nameof(latents));
        long b = latents.shape[0], c = latents.shape[1], h = latents.shape[2] / 2, w = latents.shape[3] / 2;
        using var scope = NewDisposeScope();
        return latents.view(b, c, h, 2, w, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w, c * 4).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// [B, N, 4C] → [B, C, 2·⌊H/s⌋, 2·⌊W/s⌋] for an image of <paramref name="height"/>×<paramref name="width"/> pixels
    /// (s = <paramref name="packedScale"/>), N must be ⌊H/s⌋·⌊W/s⌋.
    /// </summary>
    public static Tensor Unpack(Tensor packed, int height, int width, int packedScale = FluxPackedScale)
    {
        var (lh, lw) = LatentSize(height, width, packedScale);
        return UnpackGrid(packed, lh / 2, lw / 2);
    }

    /// <summary>[B, gridH·gridW, 4C] → [B, C, 2·gridH, 2·gridW].</summary>
    public static Tensor UnpackGrid(Tensor packed, long gridHeight, long gridWidth)
    {
        if (packed.dim() != 3 || packed.shape[2] % 4 != 0 || packed.shape[1] != gridHeight * gridWidth)
            throw new ArgumentException(
                $"Packed latents must be [B, {gridHeight}·{gridWidth}, 4C] for a {gridHeight}×{gridWidth} token grid; got [{string.Join(",", packed.shape)}].",
                nameof(packed));
        long b = packed.shape[0], c = packed.shape[2] / 4;
        using var scope = NewDisposeScope();
        return packed.view(b, gridHeight, gridWidth, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
            .reshape(b, c, gridHeight * 2, gridWidth * 2).MoveToOuterDisposeScope();
    }
}
