using static TorchSharp.torch;

namespace OmniConsistency.Inference.Sampling;

/// <summary>FLUX latent packing (2×2 patches) and image position ids.</summary>
public static class FluxLatents
{
    /// <summary>[B, c, h, w] → [B, (h/2)(w/2), 4c]: tokens row-major over the patch grid, feature = ch·4 + dy·2 + dx.</summary>
    public static Tensor Pack(Tensor latents)
    {
        if (latents.ndim != 4 || latents.shape[2] % 2 != 0 || latents.shape[3] % 2 != 0)
            throw new ArgumentException($"Latents must be [B, C, H, W] with even H and W, got [{string.Join(",", latents.shape)}].");
        long b = latents.shape[0], c = latents.shape[1], h = latents.shape[2], w = latents.shape[3];
        using var scope = NewDisposeScope();
        return latents.view(b, c, h / 2, 2, w / 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h / 2 * (w / 2), c * 4).MoveToOuterDisposeScope();
    }

    /// <summary>The inverse of <see cref="Pack"/> for a latent of <paramref name="height"/>×<paramref name="width"/> (latent pixels).</summary>
    public static Tensor Unpack(Tensor packed, long height, long width)
    {
        if (packed.ndim != 3 || height % 2 != 0 || width % 2 != 0 || packed.shape[1] != height / 2 * (width / 2) || packed.shape[2] % 4 != 0)
            throw new ArgumentException($"Packed latents [{string.Join(",", packed.shape)}] do not fit a {height}×{width} latent.");
        long b = packed.shape[0], c = packed.shape[2] / 4;
        using var scope = NewDisposeScope();
        return packed.view(b, height / 2, width / 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, height, width).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Ids (0, row, col) of the packed tokens of an h×w latent, [(h/2)(w/2), 3], in <paramref name="dtype"/> (the
    /// reference builds them in the prompt-embedding dtype, so bf16 runs round large coordinates).
    /// </summary>
    public static Tensor ImageIds(long latentHeight, long latentWidth, ScalarType dtype, Device? device = null)
    {
        using var scope = NewDisposeScope();
        long rows = latentHeight / 2, cols = latentWidth / 2;
        var ids = zeros(rows, cols, 3, ScalarType.Float32);
        ids[.., .., 1] = arange(rows, dtype: ScalarType.Float32).unsqueeze(1);
        ids[.., .., 2] = arange(cols, dtype: ScalarType.Float32).unsqueeze(0);
        return ids.reshape(rows * cols, 3).to(dtype, device ?? CPU).MoveToOuterDisposeScope();
    }
}
