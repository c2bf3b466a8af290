using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.IO;

/// <summary>
/// Loads a module's parameters from a tensor source by name: module parameter names equal checkpoint keys,
/// so loading is a walk over names. Strict: all problems are collected and reported in one exception before
/// any weight is touched. Each tensor is converted to the parameter's dtype/device as it is read
/// (read straight into the parameter where the stored dtype already matches).
/// </summary>
public static class ModuleWeightLoader
{
    public static void Load(nn.Module module, ITensorSource source, IEnumerable<string>? ignoreUnexpected = null)
    {
        var parameters = module.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        Check(module.GetName(), parameters.ToDictionary(p => p.Key, p => p.Value.shape), source, ignoreUnexpected);
        using (no_grad())
        {
            foreach (var (name, p) in parameters)
                source.LoadInto(name, p);
        }
    }

    /// <summary>Checks names and shapes only (no data read); throws <see cref="CheckpointMismatchException"/>.</summary>
    public static void Check(string moduleName, IReadOnlyDictionary<string, long[]> expected, ITensorSource source, IEnumerable<string>? ignoreUnexpected = null)
    {
        var ignore = new HashSet<string>(ignoreUnexpected ?? [], StringComparer.Ordinal);
        var keys = new HashSet<string>(source.Keys, StringComparer.Ordinal);
        var missing = expected.Keys.Where(k => !keys.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        var unexpected = keys.Where(k => !expected.ContainsKey(k) && !ignore.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        var misShaped = expected.Where(kv => keys.Contains(kv.Key) && !source.Shape(kv.Key).SequenceEqual(kv.Value))
            .Select(kv => $"{kv.Key} (checkpoint [{string.Join(",", source.Shape(kv.Key))}], model [{string.Join(",", kv.Value)}])")
            .OrderBy(k => k, StringComparer.Ordinal).ToList();
        if (missing.Count + unexpected.Count + misShaped.Count > 0)
            throw new CheckpointMismatchException(source.Description, moduleName, missing, unexpected, misShaped);
    }
}
