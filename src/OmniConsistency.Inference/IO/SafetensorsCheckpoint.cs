using System.Text.Json;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.IO;

/// <summary>
/// A checkpoint made of one safetensors file or of shards named by a <c>*.safetensors.index.json</c>
/// (the Hugging Face layout). Keys resolve to the shard that holds them; tensors are loaded one at a time.
/// </summary>
public sealed class SafetensorsCheckpoint : IDisposable
{
    private const long MaxIndexBytes = 100_000_000;

    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, SafetensorsFile> _byKey;

    private SafetensorsCheckpoint(string source, List<SafetensorsFile> files, Dictionary<string, SafetensorsFile> byKey)
    {
        Source = source;
        _files = files;
        _byKey = byKey;
    }

    /// <summary>Where it was opened from: a file, an index file or a folder.</summary>
    public string Source { get; }
    public IReadOnlyCollection<string> Keys => _byKey.Keys;
    public IReadOnlyList<SafetensorsFile> Files => _files;
    public long TotalBytes => _files.Sum(f => f.FileLength);

    /// <summary>
    /// Opens a <c>.safetensors</c> file, a <c>.safetensors.index.json</c>, or a folder holding either.
    /// A folder with an index uses the index; otherwise it must hold exactly one safetensors file
    /// unless <paramref name="weightName"/> picks one.
    /// </summary>
    public static SafetensorsCheckpoint Open(string path, string? weightName = null)
    {
        if (Directory.Exists(path))
        {
            if (weightName is not null) return Open(Path.Combine(path, weightName));
            var indexes = Directory.GetFiles(path, "*.safetensors.index.json");
            if (indexes.Length == 1) return OpenIndex(indexes[0]);
            if (indexes.Length > 1) throw new SafetensorsFormatException(path, $"folder has several index files ({string.Join(", ", indexes.Select(Path.GetFileName))}); name one");
            var files = Directory.GetFiles(path, "*.safetensors");
            if (files.Length == 1) return Open(files[0]);
            throw new SafetensorsFormatException(path, files.Length == 0
                ? "folder holds no .safetensors file"
                : $"folder holds {files.Length} .safetensors files and no index; name one");
        }
        if (path.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase)) return OpenIndex(path);
        var file = SafetensorsFile.Open(path);
        return new SafetensorsCheckpoint(path, [file], file.Keys.ToDictionary(k => k, _ => file, StringComparer.Ordinal));
    }

    private static SafetensorsCheckpoint OpenIndex(string indexPath)
    {
        if (!File.Exists(indexPath)) throw new SafetensorsFormatException(indexPath, "index file not found");
        var dir = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
        // Real indexes are ~100 kB; refuse to read anything absurdly large into memory.
        long indexBytes = new FileInfo(indexPath).Length;
        if (indexBytes > MaxIndexBytes) throw new SafetensorsFormatException(indexPath, $"index file is {indexBytes} bytes, over the {MaxIndexBytes}-byte limit");
        Dictionary<string, string> weightMap;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new SafetensorsFormatException(indexPath, "index is not a JSON object");
            if (!doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
                throw new SafetensorsFormatException(indexPath, "index has no weight_map object");
            weightMap = new(StringComparer.Ordinal);
            foreach (var p in wm.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String) throw new SafetensorsFormatException(indexPath, $"weight_map entry '{p.Name}' is not a file name");
                weightMap[p.Name] = p.Value.GetString()!;
            }
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(indexPath, $"index is not valid JSON ({e.Message})", e);
        }

        var opened = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        var byKey = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        try
        {
            foreach (var (key, shard) in weightMap)
            {
                var full = Path.GetFullPath(Path.Combine(dir, shard));
                if (!full.StartsWith(dir + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                    throw new SafetensorsFormatException(indexPath, $"shard '{shard}' lies outside the checkpoint folder");
                if (!opened.TryGetValue(full, out var f))
                {
                    f = SafetensorsFile.Open(full);
                    opened[full] = f;
                }
                if (!f.Contains(key)) throw new SafetensorsFormatException(full, $"index says it holds '{key}' but it does not");
                byKey[key] = f;
            }
        }
        catch
        {
            foreach (var f in opened.Values) f.Dispose();
            throw;
        }
        return new SafetensorsCheckpoint(indexPath, opened.Values.ToList(), byKey);
    }

    public bool Contains(string key) => _byKey.ContainsKey(key);

    public SafetensorsTensorInfo Info(string key) => FileOf(key).Info(key);

    public Tensor Load(string key, ScalarType? dtype = null, Device? device = null) => FileOf(key).Load(key, dtype, device);

    /// <summary>Loads a tensor into an existing tensor of the same shape (see <see cref="SafetensorsFile.LoadInto"/>).</summary>
    public void LoadInto(string key, Tensor destination) => FileOf(key).LoadInto(key, destination);

    private SafetensorsFile FileOf(string key) =>
        _byKey.TryGetValue(key, out var f) ? f : throw new SafetensorsFormatException(Source, $"no tensor named '{key}'");

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
