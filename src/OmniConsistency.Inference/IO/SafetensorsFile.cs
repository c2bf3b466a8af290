using System.Buffers.Binary;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.IO;

/// <summary>Where one tensor lives in a safetensors file.</summary>
public sealed record SafetensorsTensorInfo(string Name, SafetensorsDType DType, long[] Shape, long Begin, long End)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    public long ByteLength => End - Begin;
}

/// <summary>
/// One safetensors file, read lazily: the header is parsed and fully validated on open (bounds, overlaps, sizes), and
/// tensor data is read only when a tensor is loaded, each load producing a new tensor of the requested dtype/device.
/// The file stays open (a handle, not a mapping) until disposed, so loading a model costs the model itself plus one
/// tensor at a time. TorchSharp has no safetensors reader of its own; TorchSharp.PyBridge's reads whole files into memory.
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    // The reference implementation refuses headers above 100 MB; FLUX.1-dev's largest is ~100 kB.
    private const long MaxHeaderBytes = 100_000_000;

    /// <summary>Bytes per read; large tensors are read in such chunks in parallel (page faults on the destination
    /// dominate a read from the page cache, so several threads help).</summary>
    internal const long ReadChunkBytes = 16L << 20;
    private static readonly int ReadThreads = Math.Clamp(Environment.ProcessorCount, 1, 8);

    private readonly SafeFileHandle _handle;
    private volatile bool _disposed;

    private SafetensorsFile(string path, SafeFileHandle handle, long fileLength, long dataStart, Dictionary<string, SafetensorsTensorInfo> tensors, Dictionary<string, string> metadata)
    {
        FilePath = path;
        _handle = handle;
        FileLength = fileLength;
        DataStart = dataStart;
        Tensors = tensors;
        Metadata = metadata;
    }

    public string FilePath { get; }
    public long FileLength { get; }
    public long DataStart { get; }
    public IReadOnlyDictionary<string, SafetensorsTensorInfo> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public IEnumerable<string> Keys => Tensors.Keys;

    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new SafetensorsFormatException(path, "file not found");
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            long length = RandomAccess.GetLength(handle);
            if (length < 8) throw new SafetensorsFormatException(path, $"file is {length} bytes long, shorter than the 8-byte header length (truncated or not a safetensors file)");
            Span<byte> lenBytes = stackalloc byte[8];
            ReadFully(path, handle, lenBytes, 0, "the header length");
            ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
            if (headerLen > (ulong)(length - 8))
                throw new SafetensorsFormatException(path, $"header length {headerLen} runs past the end of the file ({length} bytes; truncated or not a safetensors file)");
            if (headerLen > MaxHeaderBytes) throw new SafetensorsFormatException(path, $"header length {headerLen} exceeds the {MaxHeaderBytes}-byte limit");
            if (headerLen < 2) throw new SafetensorsFormatException(path, "header is empty");
            var header = new byte[headerLen];
            ReadFully(path, handle, header, 8, "the header");
            long dataStart = 8 + (long)headerLen;
            var (tensors, metadata) = ParseHeader(path, header, length - dataStart);
            return new SafetensorsFile(path, handle, length, dataStart, tensors, metadata);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Reads exactly destination.Length bytes; a file that ends early (truncated after opening) is an error, not a hang.</summary>
    private static void ReadFully(string path, SafeFileHandle handle, Span<byte> destination, long position, string what)
    {
        while (destination.Length > 0)
        {
            int n = RandomAccess.Read(handle, destination, position);
            if (n <= 0) throw new SafetensorsFormatException(path, $"file ended at byte {position} while reading {what} (truncated since it was opened?)");
            destination = destination[n..];
            position += n;
        }
    }

    private static (Dictionary<string, SafetensorsTensorInfo>, Dictionary<string, string>) ParseHeader(string path, byte[] header, long dataSize)
    {
        // JsonDocument validates UTF-8 lazily (GetString would throw InvalidOperationException), so check it first.
        if (!System.Text.Unicode.Utf8.IsValid(header)) throw new SafetensorsFormatException(path, "header is not valid UTF-8");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(path, $"header is not valid JSON ({e.Message})", e);
        }
        catch (ArgumentException e)
        {
            throw new SafetensorsFormatException(path, $"header is not valid UTF-8 JSON ({e.Message})", e);
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new SafetensorsFormatException(path, "header is not a JSON object");
            var tensors = new Dictionary<string, SafetensorsTensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(prop.Name)) throw new SafetensorsFormatException(path, $"'{prop.Name}' appears twice in the header");
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object) throw new SafetensorsFormatException(path, "__metadata__ is not an object");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String) throw new SafetensorsFormatException(path, $"__metadata__ value '{m.Name}' is not a string");
                        if (!metadata.TryAdd(m.Name, m.Value.GetString()!)) throw new SafetensorsFormatException(path, $"__metadata__ key '{m.Name}' appears twice");
                    }
                    continue;
                }
                tensors[prop.Name] = ParseEntry(path, prop, dataSize);
            }

            // Overlap check: sorted by start, each tensor must begin at or after the end of the previous one.
            SafetensorsTensorInfo? prev = null;
            foreach (var t in tensors.Values.Where(t => t.ByteLength > 0).OrderBy(t => t.Begin))
            {
                if (prev is not null && t.Begin < prev.End)
                    throw new SafetensorsFormatException(path, $"tensors '{prev.Name}' [{prev.Begin},{prev.End}) and '{t.Name}' [{t.Begin},{t.End}) overlap");
                prev = t;
            }
            return (tensors, metadata);
        }
    }

    private static SafetensorsTensorInfo ParseEntry(string path, JsonProperty prop, long dataSize)
    {
        var name = prop.Name;
        var v = prop.Value;
        if (v.ValueKind != JsonValueKind.Object) throw new SafetensorsFormatException(path, $"entry '{name}' is not an object");
        if (!v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new SafetensorsFormatException(path, $"tensor '{name}' has no dtype");
        if (!SafetensorsDTypes.TryParse(dt.GetString()!, out var dtype))
            throw new SafetensorsFormatException(path, $"tensor '{name}' has unknown dtype '{dt.GetString()}'");
        if (!v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new SafetensorsFormatException(path, $"tensor '{name}' has no shape");
        var shape = new long[sh.GetArrayLength()];
        int i = 0;
        long numel = 1;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out var n) || n < 0)
                throw new SafetensorsFormatException(path, $"tensor '{name}' has an invalid shape entry '{d}'");
            shape[i++] = n;
            try { numel = checked(numel * n); }
            catch (OverflowException) { throw new SafetensorsFormatException(path, $"tensor '{name}' shape overflows"); }
        }
        if (!v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new SafetensorsFormatException(path, $"tensor '{name}' has no [begin, end] data_offsets");
        var o = off.EnumerateArray().ToArray();
        long begin = 0, end = 0;
        if (o.Any(e => e.ValueKind != JsonValueKind.Number) || !o[0].TryGetInt64(out begin) || !o[1].TryGetInt64(out end) || begin < 0 || end < begin)
            throw new SafetensorsFormatException(path, $"tensor '{name}' has invalid data_offsets [{o[0]}, {o[1]}]");
        if (end > dataSize)
            throw new SafetensorsFormatException(path, $"tensor '{name}' data_offsets [{begin}, {end}) are out of bounds: the data section has {dataSize} bytes (truncated file?)");
        long expected;
        try { expected = checked(numel * SafetensorsDTypes.ElementSize(dtype)); }
        catch (OverflowException) { throw new SafetensorsFormatException(path, $"tensor '{name}' size overflows"); }
        if (expected != end - begin)
            throw new SafetensorsFormatException(path, $"tensor '{name}' of dtype {dtype} and shape [{string.Join(",", shape)}] needs {expected} bytes but data_offsets give {end - begin}");
        return new SafetensorsTensorInfo(name, dtype, shape, begin, end);
    }

    public bool Contains(string name) => Tensors.ContainsKey(name);

    public SafetensorsTensorInfo Info(string name) =>
        Tensors.TryGetValue(name, out var info) ? info : throw new SafetensorsFormatException(FilePath, $"no tensor named '{name}'");

    /// <summary>
    /// Loads one tensor as a new, contiguous tensor. <paramref name="dtype"/> null keeps the stored type
    /// (FP8 is upcast to float32); <paramref name="device"/> null means CPU.
    /// </summary>
    public Tensor Load(string name, ScalarType? dtype = null, Device? device = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var info = Info(name);
        var target = dtype ?? SafetensorsDTypes.NaturalType(info.DType);
        device ??= CPU;
        using var scope = NewDisposeScope();
        var result = info.ElementCount == 0 ? empty(info.Shape, target, device) : ReadDecoded(info).to(target, device);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Loads one tensor into an existing tensor of the same shape (typically a module parameter), converting dtype and
    /// device as needed. A contiguous CPU destination of the stored dtype is read into directly: no temporary, one copy.
    /// </summary>
    public void LoadInto(string name, Tensor destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var info = Info(name);
        if (!destination.shape.SequenceEqual(info.Shape))
            throw new ArgumentException($"Tensor '{name}' of {FilePath} has shape [{string.Join(",", info.Shape)}] but the destination has [{string.Join(",", destination.shape)}].", nameof(destination));
        if (info.ElementCount == 0) return;
        if (destination.device_type == DeviceType.CPU && destination.is_contiguous() && ReadsDirectly(info.DType)
            && destination.dtype == SafetensorsDTypes.StorageType(info.DType))
        {
            ReadInto(info, destination);
            return;
        }
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        destination.copy_(ReadDecoded(info));
    }

    private static bool ReadsDirectly(SafetensorsDType d) => d is not (SafetensorsDType.BOOL or SafetensorsDType.F8_E4M3 or SafetensorsDType.F8_E5M2);

    /// <summary>The tensor's values as a new CPU tensor of its natural type (FP8 decoded, BOOL normalised).</summary>
    private Tensor ReadDecoded(SafetensorsTensorInfo info)
    {
        // BOOL is read as bytes and compared with 0: torch's bool kernels assume every byte is 0 or 1.
        var storage = ReadsDirectly(info.DType) ? SafetensorsDTypes.StorageType(info.DType) : ScalarType.Byte;
        var raw = empty(info.Shape, storage);
        ReadInto(info, raw);
        return info.DType switch
        {
            SafetensorsDType.F8_E4M3 or SafetensorsDType.F8_E5M2 => DecodeFp8(raw, info.DType),
            SafetensorsDType.BOOL => raw.ne(0),
            _ => raw,
        };
    }

    /// <summary>
    /// Reads the tensor's bytes into a contiguous CPU tensor of the same byte size, in parallel chunks. A read (pread)
    /// rather than a file mapping: mapped pages count in the process's resident set for as long as the mapping lives,
    /// which doubled the peak RSS of loading a model (the weights plus the whole mapped file).
    /// </summary>
    private void ReadInto(SafetensorsTensorInfo info, Tensor destination)
    {
        long elementSize = SafetensorsDTypes.ElementSize(info.DType);
        long chunkElements = Math.Max(1, ReadChunkBytes / elementSize);
        using var flat = destination.view(-1);
        var parts = new List<(long Offset, Tensor View)>();
        try
        {
            for (long first = 0; first < info.ElementCount; first += chunkElements)
                parts.Add((first * elementSize, flat.narrow(0, first, Math.Min(chunkElements, info.ElementCount - first))));
            if (parts.Count == 1)
                ReadFully(FilePath, _handle, parts[0].View.bytes, DataStart + info.Begin, $"tensor '{info.Name}'");
            else
                Parallel.ForEach(parts, new ParallelOptions { MaxDegreeOfParallelism = ReadThreads }, p => ReadFully(FilePath, _handle, p.View.bytes, DataStart + info.Begin + p.Offset, $"tensor '{info.Name}'"));
        }
        finally
        {
            foreach (var (_, view) in parts) view.Dispose();
        }
    }

    private static Tensor DecodeFp8(Tensor bytes, SafetensorsDType dtype)
    {
        var table = tensor(SafetensorsDTypes.Fp8Table(dtype));
        var flat = bytes.flatten();
        var output = empty(flat.shape[0], ScalarType.Float32);
        const long chunk = 1 << 22; // bounds the int64 index temporary to 32 MB
        for (long s = 0; s < flat.shape[0]; s += chunk)
        {
            using var inner = NewDisposeScope();
            long n = Math.Min(chunk, flat.shape[0] - s);
            output.narrow(0, s, n).copy_(table.index_select(0, flat.narrow(0, s, n).to(ScalarType.Int64)));
        }
        return output.view(bytes.shape);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _handle.Dispose();
    }
}
