using System.Text.Json;
using OmniConsistency.Inference.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Golden;

public sealed record Tolerance(double Atol, double Rtol);

/// <summary>One case folder: its case.json, its input tensors and the comparison of outputs with expected.safetensors.</summary>
public sealed class GoldenCase : IDisposable
{
    private readonly SafetensorsFile? _inputs;
    private readonly SafetensorsFile? _expected;

    public GoldenCase(string root, string name)
    {
        Root = root;
        Name = name;
        Dir = System.IO.Path.Combine(root, "cases", name);
        Doc = JsonDocument.Parse(File.ReadAllBytes(System.IO.Path.Combine(Dir, "case.json")));
        Kind = Json.GetProperty("kind").GetString()!;
        var inputs = System.IO.Path.Combine(Dir, "inputs.safetensors");
        var expected = System.IO.Path.Combine(Dir, "expected.safetensors");
        _inputs = File.Exists(inputs) ? SafetensorsFile.Open(inputs) : null;
        _expected = File.Exists(expected) ? SafetensorsFile.Open(expected) : null;
        if (Json.TryGetProperty("tolerance", out var tol) && tol.ValueKind == JsonValueKind.Object)
            Tolerance = new Tolerance(tol.GetProperty("atol").GetDouble(), tol.GetProperty("rtol").GetDouble());
    }

    public string Root { get; }
    public string Name { get; }
    public string Dir { get; }
    public string Kind { get; }
    public JsonDocument Doc { get; }
    public JsonElement Json => Doc.RootElement;
    public JsonElement Params => Json.GetProperty("params");
    public Tolerance Tolerance { get; } = new(0, 0);

    /// <summary>A path relative to the golden root (as case.json writes model and LoRA paths).</summary>
    public string RootPath(string relative) => System.IO.Path.Combine(Root, relative);

    public string ModelPath => RootPath(Json.GetProperty("model").GetString()!);

    public IEnumerable<JsonElement> Loras =>
        Json.TryGetProperty("loras", out var l) && l.ValueKind == JsonValueKind.Array ? l.EnumerateArray() : [];

    public IReadOnlyCollection<string> InputNames => (IReadOnlyCollection<string>?)_inputs?.Keys.ToList() ?? [];
    public IReadOnlyCollection<string> ExpectedNames => (IReadOnlyCollection<string>?)_expected?.Keys.ToList() ?? [];

    public bool HasInput(string name) => _inputs?.Contains(name) == true;

    public Tensor Input(string name, ScalarType? dtype = null) =>
        (_inputs ?? throw new InvalidOperationException($"{Name} has no inputs.safetensors")).Load(name, dtype);

    public Tensor Expected(string name) =>
        (_expected ?? throw new InvalidOperationException($"{Name} has no expected.safetensors")).Load(name);

    public Tolerance ToleranceFor(string output)
    {
        if (Json.TryGetProperty("tolerance_per_output", out var per) && per.TryGetProperty(output, out var t))
            return new Tolerance(t.GetProperty("atol").GetDouble(), t.GetProperty("rtol").GetDouble());
        return Tolerance;
    }

    /// <summary>
    /// Compares every expected tensor with the produced one (|a-b| &lt;= atol + rtol|b|, shapes equal).
    /// Every expected tensor must be produced; all mismatches are reported together.
    /// </summary>
    public void AssertMatches(IReadOnlyDictionary<string, Tensor> produced)
    {
        var problems = new List<string>();
        foreach (var name in ExpectedNames.OrderBy(n => n, StringComparer.Ordinal))
        {
            if (!produced.TryGetValue(name, out var actual))
            {
                problems.Add($"{name}: not produced");
                continue;
            }
            using var scope = NewDisposeScope();
            var expected = Expected(name);
            var problem = Compare(actual, expected, ToleranceFor(name));
            if (problem is not null) problems.Add($"{name}: {problem}");
        }
        if (problems.Count > 0)
            throw new Xunit.Sdk.XunitException($"{Name} ({Kind}): {problems.Count} of {ExpectedNames.Count} outputs differ:\n  " + string.Join("\n  ", problems));
    }

    public static string? Compare(Tensor actual, Tensor expected, Tolerance tol)
    {
        var ashape = actual.shape;
        var eshape = expected.shape;
        if (!ashape.SequenceEqual(eshape))
            return $"shape [{string.Join(",", ashape)}] != expected [{string.Join(",", eshape)}]";
        if (expected.NumberOfElements == 0) return null;
        var a = actual.detach().cpu().to(ScalarType.Float64);
        var b = expected.to(ScalarType.Float64);
        var diff = (a - b).abs();
        var bound = tol.Atol + tol.Rtol * b.abs();
        var bad = diff.gt(bound).logical_or(a.isnan().logical_xor(b.isnan()));
        long nBad = bad.sum().item<long>();
        if (nBad == 0) return null;
        var flat = (diff - bound).nan_to_num(1e30).flatten();
        long worst = flat.argmax().item<long>();
        double av = a.flatten()[worst].item<double>(), bv = b.flatten()[worst].item<double>();
        return $"{nBad}/{expected.NumberOfElements} elements out of tolerance (atol {tol.Atol}, rtol {tol.Rtol}); max |diff| {diff.max().item<double>():G4}; worst at flat index {worst}: got {av:G8}, expected {bv:G8}";
    }

    public void Dispose()
    {
        _inputs?.Dispose();
        _expected?.Dispose();
        Doc.Dispose();
    }
}
