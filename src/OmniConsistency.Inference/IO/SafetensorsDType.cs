using TorchSharp;

namespace OmniConsistency.Inference.IO;

/// <summary>The dtypes of the safetensors format and how each maps to a torch scalar type.</summary>
public enum SafetensorsDType
{
    F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, F8_E4M3, F8_E5M2,
}

public static class SafetensorsDTypes
{
    public static bool TryParse(string s, out SafetensorsDType dtype) => s switch
    {
        "F64" => Set(SafetensorsDType.F64, out dtype),
        "F32" => Set(SafetensorsDType.F32, out dtype),
        "F16" => Set(SafetensorsDType.F16, out dtype),
        "BF16" => Set(SafetensorsDType.BF16, out dtype),
        "I64" => Set(SafetensorsDType.I64, out dtype),
        "I32" => Set(SafetensorsDType.I32, out dtype),
        "I16" => Set(SafetensorsDType.I16, out dtype),
        "I8" => Set(SafetensorsDType.I8, out dtype),
        "U8" => Set(SafetensorsDType.U8, out dtype),
        "BOOL" => Set(SafetensorsDType.BOOL, out dtype),
        "F8_E4M3" => Set(SafetensorsDType.F8_E4M3, out dtype),
        "F8_E5M2" => Set(SafetensorsDType.F8_E5M2, out dtype),
        _ => Set(default, out dtype, false),
    };

    private static bool Set(SafetensorsDType v, out SafetensorsDType dtype, bool ok = true)
    {
        dtype = v;
        return ok;
    }

    public static string Name(SafetensorsDType d) => d.ToString();

    public static int ElementSize(SafetensorsDType d) => d switch
    {
        SafetensorsDType.F64 or SafetensorsDType.I64 => 8,
        SafetensorsDType.F32 or SafetensorsDType.I32 => 4,
        SafetensorsDType.F16 or SafetensorsDType.BF16 or SafetensorsDType.I16 => 2,
        _ => 1,
    };

    /// <summary>The torch type the raw bytes are read as. FP8 has no TorchSharp type: it is read as bytes and decoded.</summary>
    public static torch.ScalarType StorageType(SafetensorsDType d) => d switch
    {
        SafetensorsDType.F64 => torch.ScalarType.Float64,
        SafetensorsDType.F32 => torch.ScalarType.Float32,
        SafetensorsDType.F16 => torch.ScalarType.Float16,
        SafetensorsDType.BF16 => torch.ScalarType.BFloat16,
        SafetensorsDType.I64 => torch.ScalarType.Int64,
        SafetensorsDType.I32 => torch.ScalarType.Int32,
        SafetensorsDType.I16 => torch.ScalarType.Int16,
        SafetensorsDType.I8 => torch.ScalarType.Int8,
        SafetensorsDType.BOOL => torch.ScalarType.Bool,
        _ => torch.ScalarType.Byte,
    };

    /// <summary>The type a tensor has after loading when no target dtype is given (FP8 is upcast to float32).</summary>
    public static torch.ScalarType NaturalType(SafetensorsDType d) =>
        d is SafetensorsDType.F8_E4M3 or SafetensorsDType.F8_E5M2 ? torch.ScalarType.Float32 : StorageType(d);

    public static SafetensorsDType FromTorch(torch.ScalarType t) => t switch
    {
        torch.ScalarType.Float64 => SafetensorsDType.F64,
        torch.ScalarType.Float32 => SafetensorsDType.F32,
        torch.ScalarType.Float16 => SafetensorsDType.F16,
        torch.ScalarType.BFloat16 => SafetensorsDType.BF16,
        torch.ScalarType.Int64 => SafetensorsDType.I64,
        torch.ScalarType.Int32 => SafetensorsDType.I32,
        torch.ScalarType.Int16 => SafetensorsDType.I16,
        torch.ScalarType.Int8 => SafetensorsDType.I8,
        torch.ScalarType.Byte => SafetensorsDType.U8,
        torch.ScalarType.Bool => SafetensorsDType.BOOL,
        _ => throw new ArgumentException($"Tensors of type {t} cannot be written to safetensors."),
    };

    /// <summary>Float value of every FP8 byte (OCP FP8 formats as in PyTorch's float8_e4m3fn / float8_e5m2).</summary>
    public static float[] Fp8Table(SafetensorsDType d)
    {
        var table = new float[256];
        for (int b = 0; b < 256; b++)
            table[b] = d == SafetensorsDType.F8_E4M3 ? DecodeE4M3((byte)b) : DecodeE5M2((byte)b);
        return table;
    }

    private static float DecodeE4M3(byte b)
    {
        int sign = b >> 7, exp = (b >> 3) & 0xF, man = b & 0x7;
        float v;
        if (exp == 0xF && man == 0x7) v = float.NaN; // e4m3fn: no infinities, one NaN pattern per sign
        else if (exp == 0) v = man / 8f * MathF.Pow(2, -6);
        else v = (1 + man / 8f) * MathF.Pow(2, exp - 7);
        return sign == 1 ? -v : v;
    }

    private static float DecodeE5M2(byte b)
    {
        int sign = b >> 7, exp = (b >> 2) & 0x1F, man = b & 0x3;
        float v;
        if (exp == 0x1F) v = man == 0 ? float.PositiveInfinity : float.NaN;
        else if (exp == 0) v = man / 4f * MathF.Pow(2, -14);
        else v = (1 + man / 4f) * MathF.Pow(2, exp - 15);
        return sign == 1 ? -v : v;
    }
}
