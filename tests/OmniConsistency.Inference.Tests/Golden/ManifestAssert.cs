using System.Text;
using TorchSharp;
using Xunit.Sdk;

namespace OmniConsistency.Inference.Tests.Golden;

/// <summary>Assertions for manifest checkers: compare (name, shape) lists and parameter totals with a readable diff.</summary>
public static class ManifestAssert
{
    private const int MaxListed = 25;

    /// <summary>
    /// The same set of names, identical shapes, no duplicate names in <paramref name="actual"/>, and
    /// sum(numel(actual)) == <paramref name="totalParameters"/>. All differences are reported together
    /// (missing / extra / mis-shaped / duplicated names, first <c>25</c> of each with counts).
    /// </summary>
    public static void SameParameters(IReadOnlyList<(string Name, long[] Shape)> expected, IEnumerable<(string Name, long[] Shape)> actual,
        long totalParameters, string what = "module")
    {
        var actualList = actual.ToList();
        var diff = Diff(expected, actualList, totalParameters);
        if (diff is not null) throw new XunitException($"{what} does not match the manifest ({expected.Count} expected tensors, {actualList.Count} actual):\n{diff}");
    }

    /// <summary><see cref="SameParameters(IReadOnlyList{ValueTuple{string, long[]}}, IEnumerable{ValueTuple{string, long[]}}, long, string)"/>
    /// against a manifest, its symbolic shapes evaluated at <paramref name="rank"/>.</summary>
    public static void SameParameters(ManifestFile manifest, IEnumerable<(string Name, long[] Shape)> actual, long? rank = null, string what = "module") =>
        SameParameters(manifest.Parameters(rank), actual, manifest.TotalParameters(rank), $"{what} vs {Path.GetFileName(manifest.FilePath)}{(rank is { } r ? $" (r = {r})" : "")}");

    /// <summary>(name, shape) of a module's parameters, as the manifests list them.</summary>
    public static IReadOnlyList<(string Name, long[] Shape)> ParametersOf(torch.nn.Module module) =>
        module.named_parameters().Select(p => (p.name, p.parameter.shape)).ToList();

    /// <summary>Every parameter lives on the meta device: the check built the module without allocating weights.</summary>
    public static void NotMaterialised(torch.nn.Module module, string what = "module")
    {
        var real = module.named_parameters().Where(p => p.parameter.device_type != DeviceType.META).Select(p => $"{p.name} ({p.parameter.device})").ToList();
        if (real.Count > 0) throw new XunitException($"{what} has {real.Count} parameters off the meta device: {List(real)}");
    }

    /// <summary>The differences as text, or null when there are none.</summary>
    public static string? Diff(IReadOnlyList<(string Name, long[] Shape)> expected, IReadOnlyList<(string Name, long[] Shape)> actual, long totalParameters)
    {
        var sb = new StringBuilder();
        var duplicates = actual.GroupBy(a => a.Name, StringComparer.Ordinal).Where(g => g.Count() > 1).Select(g => $"{g.Key} (x{g.Count()})").Order(StringComparer.Ordinal).ToList();
        var want = new Dictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var (name, shape) in expected) want[name] = shape;
        var have = new Dictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var (name, shape) in actual) have.TryAdd(name, shape);

        var missing = want.Keys.Where(k => !have.ContainsKey(k)).Order(StringComparer.Ordinal).Select(k => $"{k} {Shape(want[k])}").ToList();
        var extra = have.Keys.Where(k => !want.ContainsKey(k)).Order(StringComparer.Ordinal).Select(k => $"{k} {Shape(have[k])}").ToList();
        var misShaped = want.Where(kv => have.TryGetValue(kv.Key, out var s) && !s.SequenceEqual(kv.Value)).OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => $"{kv.Key}: expected {Shape(kv.Value)}, actual {Shape(have[kv.Key])}").ToList();
        Section(sb, "missing (in the manifest, not in the module)", missing);
        Section(sb, "extra (in the module, not in the manifest)", extra);
        Section(sb, "wrong shape", misShaped);
        Section(sb, "duplicated names", duplicates);

        long actualTotal = actual.Sum(a => Numel(a.Shape));
        if (actualTotal != totalParameters)
            sb.Append($"  total parameters: expected {totalParameters:N0}, actual {actualTotal:N0} (difference {actualTotal - totalParameters:N0})\n");
        return sb.Length == 0 ? null : sb.ToString().TrimEnd('\n');
    }

    private static void Section(StringBuilder sb, string title, List<string> items)
    {
        if (items.Count == 0) return;
        sb.Append($"  {title} ({items.Count}):\n");
        foreach (var item in items.Take(MaxListed)) sb.Append($"    {item}\n");
        if (items.Count > MaxListed) sb.Append($"    ... and {items.Count - MaxListed} more\n");
    }

    private static string List(List<string> items) => string.Join(", ", items.Take(MaxListed)) + (items.Count > MaxListed ? ", ..." : "");

    private static string Shape(long[] shape) => $"[{string.Join(",", shape)}]";

    private static long Numel(long[] shape) => shape.Aggregate(1L, (a, b) => checked(a * b));
}
