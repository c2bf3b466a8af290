using OmniConsistency.Inference.IO;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.IO;

/// <summary>
/// Malformed files must raise a SafetensorsFormatException naming the file and the problem: never another exception,
/// a crash, a hang, or an allocation sized by what the header claims.
/// </summary>
public class SafetensorsMalformedTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Write(string header, int dataBytes = 0, ulong? headerLength = null) =>
        RawSafetensors.Write(_dir.File($"f{Guid.NewGuid():N}.safetensors"), header, new byte[dataBytes], headerLength);

    private string WriteBytes(byte[] bytes)
    {
        var path = _dir.File($"f{Guid.NewGuid():N}.safetensors");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private const string OneF32 = """{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}""";

    [Fact]
    public void MissingFile() =>
        RawSafetensors.AssertRejected(_dir.File("nope.safetensors"), "not found");

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(7)]
    public void FileShorterThanEightBytes(int length) =>
        RawSafetensors.AssertRejected(WriteBytes(new byte[length]), "shorter than the 8-byte");

    [Theory]
    [InlineData(1UL << 63)]
    [InlineData(ulong.MaxValue)]
    [InlineData(1UL << 32)]
    public void HeaderLengthPastTheEnd(ulong headerLength) =>
        RawSafetensors.AssertRejected(Write(OneF32, 16, headerLength), "runs past the end");

    [Fact]
    public void HeaderLengthOneBytePastTheEnd()
    {
        ulong fits = (ulong)System.Text.Encoding.UTF8.GetByteCount(OneF32) + 16;
        using (var valid = SafetensorsFile.Open(Write(OneF32, 16))) Assert.Single(valid.Tensors);
        RawSafetensors.AssertRejected(Write(OneF32, 16, fits + 1), "runs past the end");
    }

    [Fact]
    public void EmptyHeader() => RawSafetensors.AssertRejected(Write("", 16), "header is empty");

    [Theory]
    [InlineData("{not json}")]
    [InlineData("{\"t\":{\"dtype\":\"F32\",")]
    [InlineData("{} trailing")]
    [InlineData("{\"t\":1}\0\0")]
    public void InvalidJson(string header) => RawSafetensors.AssertRejected(Write(header, 16), "not valid");

    [Fact]
    public void InvalidUtf8InHeader()
    {
        var bytes = RawSafetensors.Build("{\"\u00e9\":{}}", []);
        bytes[Array.IndexOf(bytes, (byte)0xC3)] = 0xFF;
        RawSafetensors.AssertRejected(WriteBytes(bytes), "not valid");
    }

    [Theory]
    [InlineData("[]")]
    [InlineData("[1,2]")]
    [InlineData("\"text\"")]
    [InlineData("123")]
    [InlineData("null")]
    public void HeaderNotAnObject(string header) => RawSafetensors.AssertRejected(Write(header), "not a JSON object");

    [Fact]
    public void TruncatedFile()
    {
        var full = RawSafetensors.Build(OneF32, new byte[16]);
        RawSafetensors.AssertRejected(WriteBytes(full[..^1]), "out of bounds");
        RawSafetensors.AssertRejected(WriteBytes(full[..^16]), "out of bounds");
        RawSafetensors.AssertRejected(WriteBytes(full[..20]), "runs past the end"); // cut inside the header
    }

    [Fact]
    public void FileTruncatedAfterOpeningFailsOnLoadInsteadOfHanging()
    {
        var path = _dir.File("shrinks.safetensors");
        using (var scope = NewDisposeScope())
            SafetensorsWriter.Save(path, [new("a", ones(1000)), new("b", ones(1000))]);
        using var f = SafetensorsFile.Open(path);
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.Write)) fs.SetLength(f.DataStart + 100);
        var e = Assert.Throws<SafetensorsFormatException>(() => f.Load("b").Dispose());
        RawSafetensors.AssertNames(e, path, "file ended");
    }

    [Theory]
    [InlineData("""{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,20]}}""")]
    [InlineData("""{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[16,32]}}""")]
    [InlineData("""{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[9223372036854775791,9223372036854775807]}}""")]
    public void OffsetsOutOfBounds(string header) => RawSafetensors.AssertRejected(Write(header, 16), "out of bounds");

    [Theory]
    [InlineData("""{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[-16,0]}}""")]
    [InlineData("""{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[16,0]}}""")]
    [InlineData("""{"t":{"dtype":"F32","shape":[2,2],"data_offsets":["0","16"]}}""")]
    [InlineData("""{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16.5]}}""")]
    [InlineData("""{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,1e400]}}""")]
    [InlineData("""{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[null,16]}}""")]
    public void InvalidOffsets(string header) => RawSafetensors.AssertRejected(Write(header, 16), "invalid data_offsets");

    [Theory]
    [InlineData("""{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0]}}""")]
    [InlineData("""{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,8,16]}}""")]
    [InlineData("""{"t":{"dtype":"F32","shape":[2,2],"data_offsets":{"begin":0}}}""")]
    [InlineData("""{"t":{"dtype":"F32","shape":[2,2]}}""")]
    public void MissingOffsets(string header) => RawSafetensors.AssertRejected(Write(header, 16), "data_offsets");

    [Fact]
    public void OverlappingOffsets()
    {
        var e = RawSafetensors.AssertRejected(Write(
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 16), "overlap");
        Assert.Contains("'a'", e.Problem);
        Assert.Contains("'b'", e.Problem);
        RawSafetensors.AssertRejected(Write(
            """{"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", 16), "overlap");
        RawSafetensors.AssertRejected(Write(
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 16), "overlap");
    }

    [Theory]
    [InlineData("""{"t":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}}""")]
    [InlineData("""{"t":{"dtype":"F64","shape":[2,2],"data_offsets":[0,16]}}""")]
    [InlineData("""{"t":{"dtype":"F32","shape":[],"data_offsets":[0,16]}}""")]
    [InlineData("""{"t":{"dtype":"F32","shape":[0],"data_offsets":[0,16]}}""")]
    public void ShapeAndSizeMismatch(string header) => RawSafetensors.AssertRejected(Write(header, 16), "needs");

    [Theory]
    [InlineData("F4")]
    [InlineData("f32")]
    [InlineData("complex64")]
    [InlineData("U16")]
    [InlineData("")]
    public void UnknownDType(string dtype) => RawSafetensors.AssertRejected(
        Write($$$"""{"t":{"dtype":"{{{dtype}}}","shape":[4],"data_offsets":[0,16]}}""", 16), "unknown dtype");

    [Theory]
    [InlineData("""{"t":{"shape":[4],"data_offsets":[0,16]}}""", "no dtype")]
    [InlineData("""{"t":{"dtype":4,"shape":[4],"data_offsets":[0,16]}}""", "no dtype")]
    [InlineData("""{"t":{"dtype":"F32","data_offsets":[0,16]}}""", "no shape")]
    [InlineData("""{"t":{"dtype":"F32","shape":4,"data_offsets":[0,16]}}""", "no shape")]
    [InlineData("""{"t":[1,2]}""", "not an object")]
    [InlineData("""{"__metadata__":[1]}""", "__metadata__ is not an object")]
    [InlineData("""{"__metadata__":{"format":1}}""", "not a string")]
    [InlineData("""{"__metadata__":{"a":"1","a":"2"}}""", "appears twice")]
    [InlineData("""{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", "appears twice")]
    public void MalformedEntries(string header, string problem) => RawSafetensors.AssertRejected(Write(header, 16), problem);

    [Theory]
    [InlineData("-1")]
    [InlineData("-9223372036854775808")]
    [InlineData("1.5")]
    [InlineData("\"4\"")]
    [InlineData("null")]
    [InlineData("1e3")]
    public void NegativeOrNonIntegerShape(string dim) => RawSafetensors.AssertRejected(
        Write($$$"""{"t":{"dtype":"F32","shape":[4,{{{dim}}}],"data_offsets":[0,16]}}""", 16), "invalid shape entry");

    [Theory]
    // Shapes whose byte size is beyond any file: bounds are checked before anything is allocated.
    [InlineData("""{"t":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}}""", "out of bounds")]
    [InlineData("""{"t":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,16]}}""", "overflows")]
    [InlineData("""{"t":{"dtype":"BF16","shape":[2147483648,2147483648],"data_offsets":[0,16]}}""", "size overflows")]
    [InlineData("""{"t":{"dtype":"F32","shape":[1048576,1048576,1048576],"data_offsets":[0,16]}}""", "needs")]
    [InlineData("""{"t":{"dtype":"U8","shape":[4611686018427387904],"data_offsets":[0,16]}}""", "needs")]
    public void GiantTensorClaimedByASmallFile(string header, string problem)
    {
        var path = Write(header, 16);
        long before = GC.GetAllocatedBytesForCurrentThread();
        RawSafetensors.AssertRejected(path, problem);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20, "rejecting the header allocated more than 1 MB");
    }

    [Fact]
    public void HugeHeaderLengthIsRejectedWithoutAllocatingIt()
    {
        // A length within the file but above the 100 MB header limit: a sparse file, no real disk use.
        var path = _dir.File("sparse.safetensors");
        using (var fs = new FileStream(path, FileMode.Create))
        {
            fs.Write(BitConverter.GetBytes(200_000_000UL));
            fs.SetLength(8 + 200_000_000L);
        }
        long before = GC.GetAllocatedBytesForCurrentThread();
        RawSafetensors.AssertRejected(path, "exceeds");
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);
    }

    [Fact]
    public void UnknownTensorNameIsReportedWithTheFile()
    {
        var path = Write(OneF32, 16);
        using var f = SafetensorsFile.Open(path);
        var e = Assert.Throws<SafetensorsFormatException>(() => f.Load("missing"));
        RawSafetensors.AssertNames(e, path, "no tensor named 'missing'");
    }
}
