using OmniConsistency.Inference.IO;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.IO;

/// <summary>
/// FP8 files (written by hand: TorchSharp has no FP8 type) are upcast to float32. Every one of the 256 codes is checked
/// against the OCP 8-bit floating point specification (OFP8, v1.0): E4M3 has bias 7, no infinities and NaN only at
/// S.1111.111 (PyTorch's float8_e4m3fn); E5M2 has bias 15 and IEEE-style infinities and NaNs (float8_e5m2).
/// </summary>
public class SafetensorsFp8Tests
{
    private static byte[] AllCodes() => Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();

    /// <summary>E5M2 is the upper byte of an IEEE binary16, so .NET's Half decodes it exactly (an independent reference).</summary>
    private static float ReferenceE5M2(byte code) => (float)BitConverter.UInt16BitsToHalf((ushort)(code << 8));

    /// <summary>E4M3FN by the OCP definition, built from float32 bit fields (not the reader's formula).</summary>
    private static float ReferenceE4M3(byte code)
    {
        int s = code >> 7, e = (code >> 3) & 0xF, m = code & 7;
        if (e == 0xF && m == 7) return float.NaN;
        float magnitude = e == 0
            ? (float)Math.ScaleB(m, -9) // subnormal: m/8 * 2^(1-7)
            : BitConverter.Int32BitsToSingle(((e - 7 + 127) << 23) | (m << 20));
        return s == 1 ? -magnitude : magnitude;
    }

    private static float[] LoadAllCodes(string dtype, out long[] shape)
    {
        using var dir = new TempDir();
        var path = RawSafetensors.Write(dir.File("fp8.safetensors"),
            $$$"""{"__metadata__":{"format":"pt"},"codes":{"dtype":"{{{dtype}}}","shape":[16,16],"data_offsets":[0,256]}}""", AllCodes());
        using var f = SafetensorsFile.Open(path);
        using var scope = NewDisposeScope();
        var t = f.Load("codes");
        Assert.Equal(ScalarType.Float32, t.dtype);
        shape = t.shape;
        return t.data<float>().ToArray();
    }

    private static void AssertSameFloat(float expected, float actual, int code)
    {
        if (float.IsNaN(expected))
        {
            Assert.True(float.IsNaN(actual), $"code 0x{code:X2}: expected NaN, got {actual}");
            return;
        }
        // Bit comparison: distinguishes -0 from +0.
        Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(actual),
            $"code 0x{code:X2}: expected {expected:R}, got {actual:R}");
    }

    [Fact]
    public void E4M3AllCodesMatchTheOcpDefinition()
    {
        var values = LoadAllCodes("F8_E4M3", out var shape);
        Assert.Equal(new long[] { 16, 16 }, shape);
        for (int code = 0; code < 256; code++) AssertSameFloat(ReferenceE4M3((byte)code), values[code], code);

        // Landmarks from the OCP specification's E4M3 table.
        Assert.Equal(448f, values[0x7E]);                    // max normal S.1111.110
        Assert.Equal(-448f, values[0xFE]);
        Assert.Equal(MathF.Pow(2, -6), values[0x08]);        // min normal
        Assert.Equal(0.875f * MathF.Pow(2, -6), values[0x07]); // max subnormal
        Assert.Equal(MathF.Pow(2, -9), values[0x01]);        // min subnormal
        Assert.Equal(1f, values[0x38]);
        Assert.Equal(-2f, values[0xC0]);
        Assert.True(float.IsNaN(values[0x7F]) && float.IsNaN(values[0xFF]));
        Assert.Equal(2, values.Count(float.IsNaN));
        Assert.DoesNotContain(values, float.IsInfinity);
        Assert.Equal(0, BitConverter.SingleToInt32Bits(values[0x00]));
        Assert.Equal(int.MinValue, BitConverter.SingleToInt32Bits(values[0x80])); // -0
    }

    [Fact]
    public void E5M2AllCodesMatchTheOcpDefinition()
    {
        var values = LoadAllCodes("F8_E5M2", out _);
        for (int code = 0; code < 256; code++) AssertSameFloat(ReferenceE5M2((byte)code), values[code], code);

        Assert.Equal(57344f, values[0x7B]);                  // max normal S.11110.11
        Assert.Equal(float.PositiveInfinity, values[0x7C]);
        Assert.Equal(float.NegativeInfinity, values[0xFC]);
        Assert.True(new[] { 0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF }.All(c => float.IsNaN(values[c])));
        Assert.Equal(6, values.Count(float.IsNaN));
        Assert.Equal(MathF.Pow(2, -14), values[0x04]);       // min normal
        Assert.Equal(0.75f * MathF.Pow(2, -14), values[0x03]); // max subnormal
        Assert.Equal(MathF.Pow(2, -16), values[0x01]);       // min subnormal
        Assert.Equal(1f, values[0x3C]);
        Assert.Equal(-1.5f, values[0xBE]);
        Assert.Equal(int.MinValue, BitConverter.SingleToInt32Bits(values[0x80]));
    }

    [Fact]
    public void Fp8ConvertsToOtherDTypesAndIntoParameters()
    {
        using var dir = new TempDir();
        // Unaligned on purpose: a 3-byte tensor first.
        var data = new byte[3].Concat(AllCodes()).ToArray();
        var path = RawSafetensors.Write(dir.File("fp8.safetensors"),
            """{"pad":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"w":{"dtype":"F8_E4M3","shape":[256],"data_offsets":[3,259]}}""", data);
        using var f = SafetensorsFile.Open(path);
        using var scope = NewDisposeScope();
        var expected = tensor(Enumerable.Range(0, 256).Select(c => ReferenceE4M3((byte)c)).ToArray());

        var bf16 = f.Load("w", ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, bf16.dtype);
        // Every finite E4M3 value has at most 4 significant bits, so bf16 holds it exactly.
        Assert.True(bf16.to(ScalarType.Float32).EqualsNanAware(expected));

        var param = empty(256, ScalarType.Float64);
        f.LoadInto("w", param);
        Assert.True(param.to(ScalarType.Float32).EqualsNanAware(expected));
    }
}

internal static class NanAwareEquality
{
    /// <summary>Element-wise equality where NaN equals NaN.</summary>
    public static bool EqualsNanAware(this Tensor a, Tensor b) =>
        a.shape.SequenceEqual(b.shape) && a.eq(b).logical_or(a.isnan().logical_and(b.isnan())).all().item<bool>();
}
