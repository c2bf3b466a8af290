using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Imaging;

/// <summary>Conversions between 8-bit RGB images and the VAE's tensors, as diffusers' VaeImageProcessor does them.</summary>
public static class ImageTensors
{
    /// <summary>
    /// RGB image → [1, 3, H, W] float32 in [-1, 1]: pixel / 255, then 2x − 1 (VaeImageProcessor.preprocess), both
    /// in float32 so the values equal the reference's bit for bit.
    /// </summary>
    public static Tensor ToTensor(RgbImage image, Device? device = null)
    {
        using var scope = NewDisposeScope();
        var hwc = tensor(image.Pixels, [image.Height, image.Width, 3], dtype: ScalarType.Byte);
        var x = hwc.permute(2, 0, 1).unsqueeze(0).to(ScalarType.Float32).div(255.0f).mul(2.0f).sub(1.0f);
        return (device is null ? x.contiguous() : x.to(device).contiguous()).MoveToOuterDisposeScope();
    }

    /// <summary>Decoder output (about [-1, 1]) → [0, 1]: clamp(x·0.5 + 0.5, 0, 1) in the input's dtype (the reference does this in bf16 too).</summary>
    public static Tensor Denormalize(Tensor decoded)
    {
        using var scope = NewDisposeScope();
        return decoded.mul(0.5).add(0.5).clamp(0.0, 1.0).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Images [B, 3, H, W] in [0, 1] → 8-bit RGB: float32, round half to even of x·255 (numpy's round, as
    /// VaeImageProcessor.numpy_to_pil), clipped to 0..255 (NaN → 0).
    /// </summary>
    public static RgbImage[] ToImages(Tensor images01)
    {
        if (images01.dim() != 4 || images01.shape[1] != 3)
            throw new ArgumentException($"Images must be [B, 3, H, W]; got [{string.Join(",", images01.shape)}].", nameof(images01));
        using var scope = NewDisposeScope();
        var bytes = images01.detach().to(ScalarType.Float32).cpu().nan_to_num(0.0).mul(255.0f).round().clamp(0.0, 255.0)
            .to(ScalarType.Byte).permute(0, 2, 3, 1).contiguous();
        int b = (int)bytes.shape[0], h = (int)bytes.shape[1], w = (int)bytes.shape[2];
        var result = new RgbImage[b];
        for (int i = 0; i < b; i++) result[i] = new RgbImage(w, h, bytes[i].data<byte>().ToArray());
        return result;
    }
}
