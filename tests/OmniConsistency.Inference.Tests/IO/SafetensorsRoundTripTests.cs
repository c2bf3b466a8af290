using System.Buffers.Binary;
using System.Text.Json;
using OmniConsistency.Inference.IO;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.IO;

public class SafetensorsRoundTripTests
{
    private static readonly long[][] Shapes = [[2, 3, 5], [7], [], [1, 1, 4]];

    /// <summary>Values covering each type's range and, for floats, NaN, ±inf, -0 and subnormals.</summary>
    private static Tensor Sample(ScalarType type, long[] shape, Generator gen)
    {
        long n = shape.Aggregate(1L, (a, b) => a * b);
        Tensor flat = type switch
        {
            ScalarType.Float64 or ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 =>
                cat([tensor(new double[] { double.NaN, double.PositiveInfinity, double.NegativeInfinity, -0.0, 1e-40, 3e-8, 65504, 1e30 }),
                     randn(Math.Max(0, n - 8), ScalarType.Float64, generator: gen) * 100]).narrow(0, 0, n).to(type),
            ScalarType.Int64 => cat([tensor(new[] { long.MinValue, long.MaxValue, -1L, 0L }), randint(-1L << 40, 1L << 40, [Math.Max(0, n - 4)], ScalarType.Int64, generator: gen)]).narrow(0, 0, n),
            ScalarType.Int32 => cat([tensor(new[] { int.MinValue, int.MaxValue }), randint(int.MinValue, int.MaxValue, [Math.Max(0, n - 2)], ScalarType.Int32, generator: gen)]).narrow(0, 0, n),
            ScalarType.Int16 => randint(short.MinValue, short.MaxValue + 1, [n], ScalarType.Int16, generator: gen),
            ScalarType.Int8 => randint(sbyte.MinValue, sbyte.MaxValue + 1, [n], ScalarType.Int8, generator: gen),
            ScalarType.Byte => randint(0, 256, [n], ScalarType.Byte, generator: gen),
            ScalarType.Bool => randint(0, 2, [n], ScalarType.Int64, generator: gen).to(ScalarType.Bool),
            _ => throw new ArgumentException(type.ToString()),
        };
        return flat.reshape(shape);
    }

    private static void AssertBitIdentical(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.dtype, actual.dtype);
        Assert.Equal(expected.shape, actual.shape);
        Assert.True(expected.contiguous().bytes.SequenceEqual(actual.contiguous().bytes), $"{what}: bytes differ");
    }

    [Theory]
    [InlineData(ScalarType.Float32, "F32")]
    [InlineData(ScalarType.Float16, "F16")]
    [InlineData(ScalarType.BFloat16, "BF16")]
    [InlineData(ScalarType.Float64, "F64")]
    [InlineData(ScalarType.Int64, "I64")]
    [InlineData(ScalarType.Int32, "I32")]
    [InlineData(ScalarType.Int16, "I16")]
    [InlineData(ScalarType.Int8, "I8")]
    [InlineData(ScalarType.Byte, "U8")]
    [InlineData(ScalarType.Bool, "BOOL")]
    public void EveryDTypeRoundTripsBitForBit(ScalarType type, string stName)
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        var gen = new Generator(7);
        var tensors = Shapes.Select((s, i) => new KeyValuePair<string, Tensor>($"t{i}", Sample(type, s, gen))).ToList();
        var path = dir.File("a.safetensors");
        SafetensorsWriter.Save(path, tensors);

        using var f = SafetensorsFile.Open(path);
        Assert.Equal(tensors.Select(t => t.Key).Order(), f.Keys.Order());
        foreach (var (name, t) in tensors)
        {
            Assert.Equal(stName, f.Info(name).DType.ToString());
            AssertBitIdentical(t, f.Load(name), name);
            var into = empty(t.shape, type);
            f.LoadInto(name, into);
            AssertBitIdentical(t, into, name + " (LoadInto)");
        }
    }

    [Fact]
    public void WriterHeaderIsPaddedToEightBytesWithContiguousOffsetsInGivenOrder()
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        var path = dir.File("a.safetensors");
        SafetensorsWriter.Save(path, [new("z", ones(3, ScalarType.Byte)), new("a", ones(2, 2)), new("m", zeros(0, 4))],
            new Dictionary<string, string> { ["format"] = "pt" });
        var bytes = File.ReadAllBytes(path);
        long headerLen = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, headerLen % 8);
        var header = System.Text.Encoding.UTF8.GetString(bytes, 8, (int)headerLen);
        Assert.Matches(@"^\{.*\} *$", header); // padded with spaces only
        using var doc = JsonDocument.Parse(header);
        Assert.Equal("pt", doc.RootElement.GetProperty("__metadata__").GetProperty("format").GetString());
        Assert.Equal("[0,3]", doc.RootElement.GetProperty("z").GetProperty("data_offsets").GetRawText());
        Assert.Equal("[3,19]", doc.RootElement.GetProperty("a").GetProperty("data_offsets").GetRawText());
        Assert.Equal("[19,19]", doc.RootElement.GetProperty("m").GetProperty("data_offsets").GetRawText());
        Assert.Equal(8 + headerLen + 19, bytes.Length);
    }

    [Fact]
    public void ReadsAFileBuiltByHand()
    {
        using var dir = new TempDir();
        var data = new byte[4 * 2 + 2 * 2 + 2];
        BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(0), 1.5f);
        BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(4), -2f);
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(8), 0x3FC0); // bf16 1.5
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(10), 0xC100); // bf16 -8
        BinaryPrimitives.WriteInt16LittleEndian(data.AsSpan(12), -300);
        var path = RawSafetensors.Write(dir.File("h.safetensors"),
            """{"f":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]},"i":{"dtype":"I16","shape":[],"data_offsets":[12,14]}}""", data);
        using var f = SafetensorsFile.Open(path);
        using var scope = NewDisposeScope();
        Assert.Equal(new[] { 1.5f, -2f }, f.Load("f").data<float>().ToArray());
        var b = f.Load("b");
        Assert.Equal(ScalarType.BFloat16, b.dtype);
        Assert.Equal(new[] { 1.5f, -8f }, b.to(ScalarType.Float32).data<float>().ToArray());
        var i = f.Load("i");
        Assert.Equal(0, i.dim());
        Assert.Equal((short)-300, i.item<short>());
        Assert.Empty(f.Metadata);
    }

    [Fact]
    public void MetadataRoundTrips()
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        var meta = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode \"quoted\"", ["empty"] = "" };
        var path = dir.File("m.safetensors");
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["x"] = ones(2) }, meta);
        using var f = SafetensorsFile.Open(path);
        Assert.Equal(meta.OrderBy(k => k.Key), f.Metadata.OrderBy(k => k.Key));
        Assert.Equal(["x"], f.Keys);
    }

    [Fact]
    public void ZeroElementTensorsLoadWithTheirShapeAndAnyDType()
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        var path = dir.File("z.safetensors");
        SafetensorsWriter.Save(path, [new("a", zeros(0)), new("b", zeros([3, 0, 2], ScalarType.BFloat16)), new("c", ones(2))]);
        using var f = SafetensorsFile.Open(path);
        Assert.Equal(new long[] { 0 }, f.Load("a").shape);
        var b = f.Load("b", ScalarType.Float64);
        Assert.Equal(new long[] { 3, 0, 2 }, b.shape);
        Assert.Equal(ScalarType.Float64, b.dtype);
        f.LoadInto("b", empty([3, 0, 2]));
        Assert.Equal(new[] { 1f, 1f }, f.Load("c").data<float>().ToArray());

        // By hand: a zero-length tensor sharing its offset with a real one is not an overlap.
        var data = new byte[4];
        var hand = RawSafetensors.Write(dir.File("h.safetensors"),
            """{"e":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]},"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"f":{"dtype":"I8","shape":[0],"data_offsets":[4,4]}}""", data);
        using var h = SafetensorsFile.Open(hand);
        Assert.Equal(new long[] { 0, 5 }, h.Load("e").shape);
        Assert.Equal(0f, h.Load("x").item<float>());
    }

    [Fact]
    public void UnalignedOffsetsLoadCorrectly()
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        var gen = new Generator(3);
        // After a 3-byte and a 1-byte tensor nothing is aligned to its element size; the large tensor (36 MB)
        // also spans several read chunks, read in parallel.
        var tensors = new List<KeyValuePair<string, Tensor>>
        {
            new("u8", randint(0, 256, [3], ScalarType.Byte, generator: gen)),
            new("f32", randn([5], generator: gen)),
            new("i8", randint(-128, 128, [1], ScalarType.Int8, generator: gen)),
            new("f64", randn([3, 2], ScalarType.Float64, generator: gen)),
            new("bf16", randn([7], ScalarType.BFloat16, generator: gen)),
            new("big", randn([3000, 3001], generator: gen)),
            new("i64", randint(-1000, 1000, [4], ScalarType.Int64, generator: gen)),
        };
        var path = dir.File("u.safetensors");
        SafetensorsWriter.Save(path, tensors);
        using var f = SafetensorsFile.Open(path);
        Assert.Equal(3, f.Info("f32").Begin);
        Assert.NotEqual(0, (f.DataStart + f.Info("big").Begin) % 4);
        Assert.True(f.Info("big").ByteLength > 2 * SafetensorsFile.ReadChunkBytes);
        foreach (var (name, t) in tensors)
        {
            AssertBitIdentical(t, f.Load(name), name);
            var into = empty(t.shape, t.dtype);
            f.LoadInto(name, into);
            AssertBitIdentical(t, into, name + " (LoadInto)");
        }
    }

    [Fact]
    public void LoadConvertsToTheRequestedDType()
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        var gen = new Generator(11);
        var f32 = randn([4, 6], generator: gen) * 10;
        var bf16 = randn([5], ScalarType.BFloat16, generator: gen);
        var i64 = randint(-50, 50, [3], ScalarType.Int64, generator: gen);
        var flags = tensor(new[] { true, false, true });
        var path = dir.File("c.safetensors");
        SafetensorsWriter.Save(path, [new("f32", f32), new("bf16", bf16), new("i64", i64), new("flags", flags)]);
        using var f = SafetensorsFile.Open(path);

        AssertBitIdentical(f32.to(ScalarType.BFloat16), f.Load("f32", ScalarType.BFloat16), "f32->bf16");
        AssertBitIdentical(f32.to(ScalarType.Float16), f.Load("f32", ScalarType.Float16), "f32->f16");
        AssertBitIdentical(bf16.to(ScalarType.Float32), f.Load("bf16", ScalarType.Float32), "bf16->f32");
        AssertBitIdentical(i64.to(ScalarType.Float32), f.Load("i64", ScalarType.Float32), "i64->f32");
        Assert.Equal(new[] { 1f, 0f, 1f }, f.Load("flags", ScalarType.Float32).data<float>().ToArray());

        // LoadInto converts into the destination's dtype, and into non-contiguous destinations.
        var into = empty([4, 6], ScalarType.Float64);
        f.LoadInto("f32", into);
        AssertBitIdentical(f32.to(ScalarType.Float64), into, "f32 into f64");
        var strided = empty([6, 4]).t();
        Assert.False(strided.is_contiguous());
        f.LoadInto("f32", strided);
        Assert.True(strided.eq(f32).all().item<bool>());
        var ex = Assert.Throws<ArgumentException>(() => f.LoadInto("f32", empty(6, 4)));
        Assert.Contains("[4,6]", ex.Message);
    }

    [Fact]
    public void LoadMovesToTheRequestedDevice()
    {
        if (!cuda.is_available()) Assert.Skip("no CUDA device visible to libtorch (the default TorchBackend=cpu build never has one; run a TorchBackend=cuda build on a GPU)");
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        var t = randn([3, 4], generator: new Generator(5));
        var path = dir.File("d.safetensors");
        SafetensorsWriter.Save(path, [new("t", t)]);
        using var f = SafetensorsFile.Open(path);
        var onGpu = f.Load("t", ScalarType.BFloat16, CUDA);
        Assert.Equal(DeviceType.CUDA, onGpu.device_type);
        AssertBitIdentical(t.to(ScalarType.BFloat16), onGpu.cpu(), "cuda");
        var dest = empty([3, 4], ScalarType.Float32, CUDA);
        f.LoadInto("t", dest);
        AssertBitIdentical(t, dest.cpu(), "cuda LoadInto");
    }

    [Fact]
    public void BoolBytesOtherThanOneAreTrue()
    {
        using var dir = new TempDir();
        var path = RawSafetensors.Write(dir.File("b.safetensors"), """{"b":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}}""", [0, 1, 2, 255]);
        using var f = SafetensorsFile.Open(path);
        using var scope = NewDisposeScope();
        Assert.Equal(new[] { 0f, 1f, 1f, 1f }, f.Load("b", ScalarType.Float32).data<float>().ToArray());
        Assert.Equal(new[] { false, true, true, true }, f.Load("b").data<bool>().ToArray());
    }

    [Fact]
    public void WriterRejectsDuplicateAndReservedNamesAndWritesNonContiguousTensorsInLogicalOrder()
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        var path = dir.File("w.safetensors");
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Save(path, [new("a", ones(1)), new("a", ones(1))]));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Save(path, [new("__metadata__", ones(1))]));
        var t = arange(6, ScalarType.Float32).reshape(2, 3).t();
        SafetensorsWriter.Save(path, [new("t", t)]);
        using var f = SafetensorsFile.Open(path);
        Assert.Equal(new[] { 0f, 3f, 1f, 4f, 2f, 5f }, f.Load("t").data<float>().ToArray());
    }

    [Fact]
    public void LoadedTensorsDoNotAliasEachOtherOrOutliveTheFile()
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        var path = dir.File("a.safetensors");
        SafetensorsWriter.Save(path, [new("t", ones(4))]);
        Tensor a, b;
        using (var f = SafetensorsFile.Open(path))
        {
            a = f.Load("t");
            b = f.Load("t");
        }
        a.add_(1);
        Assert.Equal(new[] { 1f, 1f, 1f, 1f }, b.data<float>().ToArray());
        File.Delete(path);
        Assert.Equal(8f, a.sum().item<float>());
        var again = dir.File("again.safetensors");
        SafetensorsWriter.Save(again, [new("t", ones(1))]);
        var closed = SafetensorsFile.Open(again);
        closed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => closed.Load("t"));
    }
}
