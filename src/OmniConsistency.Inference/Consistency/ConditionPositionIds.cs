using static TorchSharp.torch;

namespace OmniConsistency.Inference.Consistency;

/// <summary>
/// OmniConsistency's condition position ids (<c>resize_position_encoding</c>): the condition token grid is stretched to
/// span the output grid, token (i, j) → (0, i·sh, j·sw) with sh = h/hc and sw = w/wc (latent sizes). The products
/// are taken in float32 and stored in <paramref name="dtype"/> (the reference uses the prompt-embedding dtype, so bf16
/// runs round fractional ids, quirk Q4). Channel 0 stays 0.
/// </summary>
public static class ConditionPositionIds
{
    /// <param name="conditionLatentHeight">hc = 2·(cond_size/16), the unpacked condition latent height.</param>
    /// <param name="targetLatentHeight">h = 2·(H/16), the unpacked output latent height.</param>
    public static Tensor Create(long conditionLatentHeight, long conditionLatentWidth, long targetLatentHeight, long targetLatentWidth,
        ScalarType dtype, Device? device = null)
    {
        if (conditionLatentHeight < 2 || conditionLatentWidth < 2 || targetLatentHeight < 2 || targetLatentWidth < 2)
            throw new ArgumentException("Latent sizes must be at least 2 (one packed token).");
        // Python float ratios, then float32 operands as torch's int64-tensor × float multiply.
        float sh = (float)((double)targetLatentHeight / conditionLatentHeight);
        float sw = (float)((double)targetLatentWidth / conditionLatentWidth);
        long rows = conditionLatentHeight / 2, cols = conditionLatentWidth / 2;
        var ids = new float[rows * cols * 3];
        for (long i = 0; i < rows; i++)
            for (long j = 0; j < cols; j++)
            {
                ids[(i * cols + j) * 3 + 1] = i * sh;
                ids[(i * cols + j) * 3 + 2] = j * sw;
            }
        using var scope = NewDisposeScope();
        return tensor(ids, [rows * cols, 3]).to(dtype, device ?? CPU).MoveToOuterDisposeScope();
    }
}
