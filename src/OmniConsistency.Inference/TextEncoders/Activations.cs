using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace OmniConsistency.Inference.TextEncoders;

/// <summary>
/// transformers' <c>ACT2FN</c> activations by config name, written with the same tensor ops in the same order so that
/// bf16 rounds at the same points as the reference (e.g. <c>gelu_new</c> is op-by-op, not a fused GELU).
/// </summary>
public static class Activations
{
    public static readonly IReadOnlyList<string> Supported =
        ["gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu", "swish", "tanh", "sigmoid"];

    /// <summary>The activation named <paramref name="name"/>; throws <see cref="NotSupportedException"/> for other names.</summary>
    public static Func<Tensor, Tensor> Get(string name) => name switch
    {
        "gelu" => x => F.gelu(x),
        "gelu_new" => GeluNew,
        "gelu_fast" => GeluFast,
        "gelu_pytorch_tanh" => GeluPytorchTanh,
        "quick_gelu" => x => x * (x * 1.702).sigmoid(),
        "relu" => x => F.relu(x),
        "silu" or "swish" => x => F.silu(x),
        "tanh" => x => x.tanh(),
        "sigmoid" => x => x.sigmoid(),
        _ => throw new NotSupportedException($"activation '{name}' is not supported (supported: {string.Join(", ", Supported)})"),
    };

    // NewGELUActivation: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))).
    private static Tensor GeluNew(Tensor x)
    {
        using var scope = NewDisposeScope();
        var inner = (x + x.pow(3.0) * 0.044715) * Math.Sqrt(2.0 / Math.PI);
        return (x * 0.5 * (inner.tanh() + 1.0)).MoveToOuterDisposeScope();
    }

    // FastGELUActivation: 0.5 * x * (1 + tanh(x * 0.7978845608 * (1 + 0.044715 * x * x))).
    private static Tensor GeluFast(Tensor x)
    {
        using var scope = NewDisposeScope();
        var inner = x * 0.7978845608 * (x * 0.044715 * x + 1.0);
        return (x * 0.5 * (inner.tanh() + 1.0)).MoveToOuterDisposeScope();
    }

    // PytorchGELUTanh: torch's fused gelu(approximate="tanh"), which computes in fp32 and rounds once. TorchSharp has
    // no approximate argument, so the same formula is evaluated in fp32 and cast back.
    private static Tensor GeluPytorchTanh(Tensor x)
    {
        using var scope = NewDisposeScope();
        var xf = x.to(ScalarType.Float32);
        return GeluNew(xf).to(x.dtype).MoveToOuterDisposeScope();
    }
}
