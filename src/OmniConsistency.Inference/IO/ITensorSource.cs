using static TorchSharp.torch;

namespace OmniConsistency.Inference.IO;

/// <summary>
/// Named tensors as a model loader sees them: a checkpoint, or a view of one under another naming
/// (BFL → diffusers, prefix stripping). Shapes are known without reading data.
/// </summary>
public interface ITensorSource
{
    /// <summary>A description for error messages (usually the path).</summary>
    string Description { get; }
    IReadOnlyCollection<string> Keys { get; }
    long[] Shape(string key);
    /// <summary>Loads one tensor as a new tensor of the given dtype on the given device.</summary>
    Tensor Load(string key, ScalarType dtype, Device device);

    /// <summary>Loads one tensor into an existing tensor of the same shape (a module parameter). Sources that can
    /// fill it without a temporary override this.</summary>
    void LoadInto(string key, Tensor destination)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        destination.copy_(Load(key, destination.dtype, destination.device));
    }
}

/// <summary>A checkpoint's tensors, optionally only those under a key prefix (which is stripped).</summary>
public sealed class CheckpointTensorSource : ITensorSource
{
    private readonly SafetensorsCheckpoint _checkpoint;
    private readonly string _prefix;
    private readonly Dictionary<string, string> _keys;

    public CheckpointTensorSource(SafetensorsCheckpoint checkpoint, string prefix = "")
    {
        _checkpoint = checkpoint;
        _prefix = prefix;
        _keys = checkpoint.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal))
            .ToDictionary(k => k[prefix.Length..], k => k, StringComparer.Ordinal);
    }

    public string Description => _prefix.Length == 0 ? _checkpoint.Source : $"{_checkpoint.Source} (prefix '{_prefix}')";
    public IReadOnlyCollection<string> Keys => _keys.Keys;
    public long[] Shape(string key) => _checkpoint.Info(_keys[key]).Shape;
    public Tensor Load(string key, ScalarType dtype, Device device) => _checkpoint.Load(_keys[key], dtype, device);
    public void LoadInto(string key, Tensor destination) => _checkpoint.LoadInto(_keys[key], destination);
}

/// <summary>
/// A source whose entries are computed from another source: renames, row slices of fused tensors, swapped halves.
/// Used to present other checkpoint layouts under diffusers names, converting tensor by tensor at load time.
/// </summary>
public sealed class MappedTensorSource : ITensorSource
{
    public sealed record Entry(long[] Shape, Func<ScalarType, Device, Tensor> Load);

    private readonly Dictionary<string, Entry> _entries;

    public MappedTensorSource(string description, Dictionary<string, Entry> entries)
    {
        Description = description;
        _entries = entries;
    }

    public string Description { get; }
    public IReadOnlyCollection<string> Keys => _entries.Keys;
    public long[] Shape(string key) => _entries[key].Shape;
    public Tensor Load(string key, ScalarType dtype, Device device) => _entries[key].Load(dtype, device);
}
