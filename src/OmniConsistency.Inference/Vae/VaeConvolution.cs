using TorchSharp;
using static TorchSharp.torch;
using Conv2d = OmniConsistency.Inference.Nn.Conv2d;
using F = TorchSharp.torch.nn.functional;

namespace OmniConsistency.Inference.Vae;

/// <summary>
/// Runs the VAE's convolutions. libtorch's CPU conv2d has no fast bf16 kernel for NCHW tensors: measured here it
/// was 18× (8 channels) to 190× (128 channels) slower than fp32, and channels-last bf16 still 4–6× slower. So on CPU a
/// bf16 convolution is computed in fp32 and rounded once to bf16, which is the arithmetic of a bf16 kernel with
/// fp32 accumulation (bf16 products are exact in fp32); weights stay bf16 in memory. Elsewhere (CUDA, fp32) the
/// layer runs as is.
/// </summary>
internal static class VaeConvolution
{
    /// <summary><paramref name="conv"/>(x) with the given stride and padding (which must be the layer's own).</summary>
    public static Tensor Apply(Conv2d conv, Tensor x, long stride, long padding)
    {
        if (x.dtype != ScalarType.BFloat16 || x.device_type != DeviceType.CPU) return conv.forward(x);
        using var scope = NewDisposeScope();
        var y = F.conv2d(x.to(ScalarType.Float32), conv.weight.to(ScalarType.Float32), conv.bias?.to(ScalarType.Float32),
            strides: [stride, stride], padding: [padding, padding]);
        return y.to(ScalarType.BFloat16).MoveToOuterDisposeScope();
    }

    /// <summary>A stride-1 convolution padded to keep the size (3×3 pad 1, 1×1 pad 0), the VAE's usual kind.</summary>
    public static Tensor Same(Conv2d conv, Tensor x) => Apply(conv, x, 1, conv.weight.shape[2] / 2);
}
