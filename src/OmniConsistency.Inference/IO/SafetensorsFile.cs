using System.Text;
using System.Text.Json;
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
/// One safetensors file, memory-mapped and read lazily: the header is parsed and validated on open, tensor data is
/// touched only when a tensor is loaded, and each load produces a new tensor of the requested dtype/device, so the
/// peak host memory of loading a model is the model itself plus the (reclaimable) page cache.
/// TorchSharp has no safetensors reader of its own; TorchSharp.PyBridge's reads whole files into memory.
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    // The reference implementation refuses headers above 100 MB; FLUX.1-dev's largest is ~100 kB.
    private const long MaxHeaderBytes = 100_000_000;

    private readonly Dictionary<ScalarType, Tensor> _maps = new();
    private readonly object _gate = new();
    private bool _disposed;

    private SafetensorsFile(string path, long fileLength, long dataStart, Dictionary<string, SafetensorsTensorInfo> tensors, Dictionary<string, string> metadata)
    {
        FilePath = path;
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
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        long length = fs.Length;
        if (length < 8) throw new SafetensorsFormatException(path, $"file is {length} bytes long, shorter than the 8-byte header length (truncated or not a safetensors file)");
        Span<byte> lenBytes = stackalloc byte[8];
        fs.ReadExactly(lenBytes);
        ulong headerLen = BitConverter.ToUInt64(lenBytes);
        if (headerLen > (ulong)(length - 8))
            throw new SafetensorsFormatException(path, $"header length {headerLen} runs past the end of the file ({length} bytes; truncated or not a safetensors file)");
        if (headerLen > MaxHeaderBytes) throw new SafetensorsFormatException(path, $"header length {headerLen} exceeds the {MaxHeaderBytes}-byte limit");
        if (headerLen < 2) throw new SafetensorsFormatException(path, "header is empty");
        var header = new byte[headerLen];
        fs.ReadExactly(header);
        long dataStart = 8 + (long)headerLen;
        var (tensors, metadata) = ParseHeader(path, header, length - dataStart);
        return new SafetensorsFile(path, length, dataStart, tensors, metadata);
    }

    private static (Dictionary<string, SafetensorsTensorInfo>, Dictionary<string, string>) ParseHeader(string path, byte[] header, long dataSize)
    {
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
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object) throw new SafetensorsFormatException(path, "__metadata__ is not an object");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String) throw new SafetensorsFormatException(path, $"__metadata__ value '{m.Name}' is not a string");
                        metadata[m.Name] = m.Value.GetString()!;
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
        if (!o[0].TryGetInt64(out var begin) || !o[1].TryGetInt64(out var end) || begin < 0 || end < begin)
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
        Tensor result;
        if (info.ElementCount == 0)
        {
            result = empty(info.Shape, target, device);
        }
        else
        {
            var raw = RawView(info);
            if (info.DType is SafetensorsDType.F8_E4M3 or SafetensorsDType.F8_E5M2)
                raw = DecodeFp8(raw, info.DType);
            // copy: true so the result never aliases the file mapping, even when dtype and device already match.
            result = raw.to(target, device, copy: true).contiguous();
        }
        return result.MoveToOuterDisposeScope();
    }

    private Tensor RawView(SafetensorsTensorInfo info)
    {
        var storage = SafetensorsDTypes.StorageType(info.DType);
        int es = SafetensorsDTypes.ElementSize(info.DType);
        long absolute = DataStart + info.Begin;
        if (absolute % es == 0)
        {
            var map = MapFor(storage, es);
            return map.narrow(0, absolute / es, info.ElementCount).view(info.Shape);
        }
        // Unaligned offsets are legal but rare (writers pad); read the bytes instead of mapping.
        var bytes = new byte[info.ByteLength];
        using (var fs = new FileStream(FilePath, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            fs.Seek(absolute, SeekOrigin.Begin);
            fs.ReadExactly(bytes);
        }
        var t = empty(info.Shape, storage);
        t.bytes = bytes;
        return t;
    }

    private Tensor MapFor(ScalarType storage, int elementSize)
    {
        lock (_gate)
        {
            if (!_maps.TryGetValue(storage, out var map))
            {
                // MAP_PRIVATE mapping of the whole file; pages are read on first touch only.
                map = from_file(FilePath, shared: false, size: FileLength / elementSize, dtype: storage);
                map.DetachFromDisposeScope();
                _maps[storage] = map;
            }
            return map;
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
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var m in _maps.Values) m.Dispose();
            _maps.Clear();
        }
    }
}
