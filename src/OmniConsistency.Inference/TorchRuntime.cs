using TorchSharp;

namespace OmniConsistency.Inference;

/// <summary>Device and dtype selection from configuration strings ("cpu", "cuda", "cuda:1"; "float32", "bfloat16").</summary>
public static class TorchRuntime
{
    public static torch.Device ParseDevice(string? device)
    {
        var d = string.IsNullOrWhiteSpace(device) ? "cpu" : device.Trim().ToLowerInvariant();
        if (d == "auto") d = torch.cuda.is_available() ? "cuda" : "cpu";
        if (d.StartsWith("cuda", StringComparison.Ordinal))
        {
            torch.InitializeDeviceType(DeviceType.CUDA);
            if (!torch.cuda.is_available())
                throw new InvalidOperationException($"Device '{device}' was requested but CUDA is not available (this build uses TorchBackend={BuildInfo.TorchBackend}).");
        }
        return new torch.Device(d);
    }

    public static torch.ScalarType ParseDType(string? dtype) => (dtype ?? "float32").Trim().ToLowerInvariant() switch
    {
        "float32" or "fp32" or "float" => torch.ScalarType.Float32,
        "bfloat16" or "bf16" => torch.ScalarType.BFloat16,
        "float16" or "fp16" or "half" => torch.ScalarType.Float16,
        "float64" or "fp64" or "double" => torch.ScalarType.Float64,
        _ => throw new ArgumentException($"Unknown dtype '{dtype}'. Use float32, bfloat16, float16 or float64."),
    };

    public static string Describe() => $"torch {torch.__version__}, cuda={(torch.cuda.is_available() ? "yes" : "no")}, threads={torch.get_num_threads()}";
}

internal static class BuildInfo
{
#if TORCH_CUDA
    public const string TorchBackend = "cuda";
#else
    public const string TorchBackend = "cpu";
#endif
}
