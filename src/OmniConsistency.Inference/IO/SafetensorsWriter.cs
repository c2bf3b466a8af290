using System.Text;
using System.Text.Json;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.IO;

/// <summary>Writes tensors in the safetensors format (header padded to 8 bytes, data in the given order).</summary>
public static class SafetensorsWriter
{
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, _) in list)
            if (!names.Add(name) || name == "__metadata__") throw new ArgumentException($"Duplicate or reserved tensor name '{name}'.");

        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, t) in list)
            {
                long bytes = t.NumberOfElements * t.ElementSize;
                w.WriteStartObject(name);
                w.WriteString("dtype", SafetensorsDTypes.Name(SafetensorsDTypes.FromTorch(t.dtype)));
                w.WriteStartArray("shape");
                foreach (var d in t.shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + bytes);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += bytes;
            }
            w.WriteEndObject();
        }
        var header = ms.ToArray();
        int padded = (header.Length + 7) / 8 * 8;

        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        fs.Write(BitConverter.GetBytes((ulong)padded));
        fs.Write(header);
        for (int i = header.Length; i < padded; i++) fs.WriteByte((byte)' ');
        foreach (var (_, t) in list)
        {
            if (t.NumberOfElements == 0) continue;
            using var scope = NewDisposeScope();
            var cpu = t.device_type == TorchSharp.DeviceType.CPU ? t.contiguous() : t.cpu().contiguous();
            WriteData(fs, cpu);
        }
    }

    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        Save(path, tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal).AsEnumerable(), metadata);

    private static void WriteData(Stream s, Tensor t)
    {
        // Straight from the tensor's native memory, in chunks of at most 256 MB.
        long total = t.NumberOfElements * t.ElementSize;
        const long chunkBytes = 1 << 28;
        if (total <= chunkBytes)
        {
            s.Write(t.bytes);
            return;
        }
        var flat = t.flatten();
        long perChunk = chunkBytes / t.ElementSize;
        for (long start = 0; start < flat.shape[0]; start += perChunk)
        {
            using var scope = NewDisposeScope();
            s.Write(flat.narrow(0, start, Math.Min(perChunk, flat.shape[0] - start)).contiguous().bytes);
        }
    }
}
