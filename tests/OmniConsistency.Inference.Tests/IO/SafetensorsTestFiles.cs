using System.Buffers.Binary;
using System.Text;
using OmniConsistency.Inference.IO;
using Xunit;

namespace OmniConsistency.Inference.Tests.IO;

/// <summary>A temporary folder removed on dispose.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir() => Path = Directory.CreateTempSubdirectory("omni-io-test-").FullName;

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (IOException) { /* best effort: a leftover temp folder is harmless */ }
    }
}

/// <summary>Builds safetensors files byte by byte, independently of SafetensorsWriter, to test the reader against the format itself.</summary>
public static class RawSafetensors
{
    /// <summary>8-byte little-endian header length, the header as given (no padding added), then the data bytes.</summary>
    public static byte[] Build(string headerJson, byte[] data, ulong? headerLength = null)
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        var file = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(file, headerLength ?? (ulong)header.Length);
        header.CopyTo(file, 8);
        data.CopyTo(file, 8 + header.Length);
        return file;
    }

    public static string Write(string path, string headerJson, byte[] data, ulong? headerLength = null)
    {
        File.WriteAllBytes(path, Build(headerJson, data, headerLength));
        return path;
    }

    /// <summary>Asserts that opening the file fails with a SafetensorsFormatException naming the file and containing <paramref name="problem"/>.</summary>
    public static SafetensorsFormatException AssertRejected(string path, string problem)
    {
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path).Dispose());
        AssertNames(e, path, problem);
        return e;
    }

    public static void AssertNames(SafetensorsFormatException e, string path, string problem)
    {
        Assert.Equal(path, e.FilePath);
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
        Assert.Contains(problem, e.Problem, StringComparison.OrdinalIgnoreCase);
    }
}
