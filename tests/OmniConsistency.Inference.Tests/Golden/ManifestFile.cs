using System.Globalization;
using System.Text.Json;

namespace OmniConsistency.Inference.Tests.Golden;

/// <summary>One dimension of a manifest shape: a number, or a symbol such as the LoRA rank "r".</summary>
public readonly record struct ManifestDim(long? Value, string? Symbol)
{
    public bool IsSymbolic => Symbol is not null;
    public long Resolve(IReadOnlyDictionary<string, long> symbols) =>
        Value ?? (symbols.TryGetValue(Symbol!, out var v) ? v : throw new InvalidOperationException($"no value given for shape symbol '{Symbol}'"));
    public override string ToString() => Value?.ToString(CultureInfo.InvariantCulture) ?? Symbol!;
}

/// <summary>One entry of a manifest's <c>tensors</c>: name, shape (possibly symbolic) and stored dtype (null = not established).</summary>
public sealed record ManifestTensor(string Name, IReadOnlyList<ManifestDim> Shape, string? DType)
{
    public long[] Resolve(IReadOnlyDictionary<string, long> symbols) => Shape.Select(d => d.Resolve(symbols)).ToArray();
}

/// <summary>BFL transformer conversion row: <c>diffusers[DiffusersKey][DiffusersFirstRow ..] = bfl[BflKey][BflFirstRow .. BflEndRow)</c> along dim 0.</summary>
public sealed record ManifestRowMapping(string BflKey, string DiffusersKey, long DiffusersFirstRow, long BflFirstRow, long BflEndRow);

/// <summary>BFL VAE conversion entry: a rename, with a reshape where a 1x1 conv becomes a Linear.</summary>
public sealed record ManifestRename(string BflKey, string DiffusersKey, long[]? FromShape, long[]? ToShape);

/// <summary>
/// A <c>manifests/&lt;name&gt;.json</c> of the <c>manifest</c> golden kind (FORMAT.md, "Manifest kind"), read together with
/// the case that names it. Loading checks the file against itself and against the case (tensor count, unique names,
/// parameter total) and throws <see cref="InvalidDataException"/> if they disagree, so checkers can trust it.
/// </summary>
public sealed class ManifestFile
{
    private ManifestFile(string path, JsonElement root, string? configPath, string? rankSymbol)
    {
        FilePath = path;
        Root = root;
        ConfigPath = configPath;
        RankSymbol = rankSymbol;
        Component = root.GetProperty("component").GetString()!;
        Layout = root.GetProperty("layout").GetString()!;
        Tensors = root.GetProperty("tensors").EnumerateArray().Select(ParseTensor).ToList();
        NTensors = root.GetProperty("n_tensors").GetInt32();
        StoredDType = root.TryGetProperty("stored_dtype", out var dt) && dt.ValueKind == JsonValueKind.String ? dt.GetString() : null;
        TotalParametersText = root.GetProperty("total_parameters").ToString();
        Tied = root.TryGetProperty("tied", out var tied) && tied.ValueKind == JsonValueKind.Object
            ? tied.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!, StringComparer.Ordinal)
            : new Dictionary<string, string>();
        (RowMappings, Renames) = ParseConversion(root);
    }

    /// <summary>Full path of the manifest JSON.</summary>
    public string FilePath { get; }
    /// <summary>The whole manifest (informational fields included), independent of any document lifetime.</summary>
    public JsonElement Root { get; }
    public string Component { get; }
    public string Layout { get; }
    /// <summary>Full path of the config.json to build the module from (the case's <c>params.config_path</c>), if any.</summary>
    public string? ConfigPath { get; }
    /// <summary>The shape symbol that stands for the LoRA rank (<c>params.rank_symbol</c>, "r"), or null.</summary>
    public string? RankSymbol { get; }
    public IReadOnlyList<ManifestTensor> Tensors { get; }
    public int NTensors { get; }
    /// <summary>Dtype stored in the published files ("BF16", "F32"); null = not established.</summary>
    public string? StoredDType { get; }
    /// <summary><c>total_parameters</c> as written: a number, or an expression such as <c>1167360*r</c>.</summary>
    public string TotalParametersText { get; }
    /// <summary>Tied weights (T5: <c>encoder.embed_tokens.weight</c> → <c>shared.weight</c>): not in <see cref="Tensors"/>.</summary>
    public IReadOnlyDictionary<string, string> Tied { get; }
    /// <summary>BFL transformer <c>conversion.mapping</c> rows (empty for other manifests).</summary>
    public IReadOnlyList<ManifestRowMapping> RowMappings { get; }
    /// <summary>BFL VAE <c>conversion.mapping</c> renames (empty for other manifests).</summary>
    public IReadOnlyList<ManifestRename> Renames { get; }

    public bool IsSymbolic => Tensors.Any(t => t.Shape.Any(d => d.IsSymbolic));

    /// <summary>The manifest named by the case's <c>manifest</c> key.</summary>
    public static ManifestFile Load(GoldenCase c)
    {
        var manifest = Read(c, c.Json.GetProperty("manifest").GetString()!);
        manifest.CheckAgainstCase(c);
        return manifest;
    }

    /// <summary>Another manifest named by a case parameter, e.g. <c>target_manifest</c> or <c>transformer_manifest</c>.</summary>
    public static ManifestFile LoadReferenced(GoldenCase c, string paramsKey) =>
        Read(c, c.Params.GetProperty(paramsKey).GetString() ?? throw new InvalidDataException($"{c.Name}: params.{paramsKey} is null"));

    private static ManifestFile Read(GoldenCase c, string relative)
    {
        var path = c.RootPath(relative);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        var p = c.Params;
        string? config = p.TryGetProperty("config_path", out var cp) && cp.ValueKind == JsonValueKind.String ? c.RootPath(cp.GetString()!) : null;
        string? rank = p.TryGetProperty("rank_symbol", out var rs) && rs.ValueKind == JsonValueKind.String ? rs.GetString() : null;
        var manifest = new ManifestFile(path, doc.RootElement.Clone(), config, rank);
        manifest.CheckSelfConsistent();
        return manifest;
    }

    /// <summary>(name, shape) of every tensor; symbolic shapes need <paramref name="rank"/> (any r ≥ 1 will do).</summary>
    public IReadOnlyList<(string Name, long[] Shape)> Parameters(long? rank = null)
    {
        var symbols = Symbols(rank);
        return Tensors.Select(t => (t.Name, t.Resolve(symbols))).ToList();
    }

    /// <summary>The expected total parameter count (sum of numel, tied weights once); evaluated at <paramref name="rank"/> if symbolic.</summary>
    public long TotalParameters(long? rank = null)
    {
        var text = TotalParametersText.Replace(" ", "", StringComparison.Ordinal);
        if (long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var plain)) return plain;
        var symbols = Symbols(rank);
        long product = 1;
        foreach (var factor in text.Split('*'))
            product = checked(product * (long.TryParse(factor, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n
                : symbols.TryGetValue(factor, out var v) ? v
                : throw new InvalidDataException($"{FilePath}: cannot evaluate total_parameters '{TotalParametersText}'")));
        return product;
    }

    private Dictionary<string, long> Symbols(long? rank)
    {
        var symbols = new Dictionary<string, long>(StringComparer.Ordinal);
        if (!IsSymbolic && !TotalParametersText.Any(char.IsLetter)) return symbols;
        if (rank is not { } r || r < 1)
            throw new InvalidOperationException($"{FilePath} has shapes in the symbol '{RankSymbol ?? "r"}': pass a rank >= 1");
        symbols[RankSymbol ?? "r"] = r;
        return symbols;
    }

    private void CheckSelfConsistent()
    {
        if (Tensors.Count != NTensors) throw new InvalidDataException($"{FilePath}: n_tensors is {NTensors} but tensors lists {Tensors.Count}");
        var duplicate = Tensors.GroupBy(t => t.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new InvalidDataException($"{FilePath}: tensor '{duplicate.Key}' is listed twice");
        var symbols = Tensors.SelectMany(t => t.Shape).Where(d => d.IsSymbolic).Select(d => d.Symbol!).Distinct().ToList();
        if (symbols.Count > 1 || (symbols.Count == 1 && RankSymbol is not null && symbols[0] != RankSymbol))
            throw new InvalidDataException($"{FilePath}: unexpected shape symbols {string.Join(", ", symbols)} (rank symbol '{RankSymbol}')");
        foreach (long r in IsSymbolic ? new long[] { 1, 7 } : new long[] { 0 })
        {
            long sum = Parameters(IsSymbolic ? r : null).Sum(p => p.Shape.Aggregate(1L, (a, b) => checked(a * b)));
            long total = TotalParameters(IsSymbolic ? r : null);
            if (sum != total) throw new InvalidDataException($"{FilePath}: tensors sum to {sum} parameters but total_parameters is {total}{(IsSymbolic ? $" (r = {r})" : "")}");
        }
    }

    private void CheckAgainstCase(GoldenCase c)
    {
        var p = c.Params;
        var problems = new List<string>();
        if (p.GetProperty("component").GetString() != Component) problems.Add($"component {p.GetProperty("component")} != {Component}");
        if (p.GetProperty("layout").GetString() != Layout) problems.Add($"layout {p.GetProperty("layout")} != {Layout}");
        if (p.TryGetProperty("n_tensors", out var n) && n.GetInt32() != NTensors) problems.Add($"n_tensors {n} != {NTensors}");
        if (p.TryGetProperty("total_parameters", out var t) && t.ToString() != TotalParametersText) problems.Add($"total_parameters {t} != {TotalParametersText}");
        if (ConfigPath is not null && !File.Exists(ConfigPath)) problems.Add($"config_path {ConfigPath} does not exist");
        if (problems.Count > 0) throw new InvalidDataException($"{c.Name}: case.json disagrees with {FilePath}: {string.Join("; ", problems)}");
    }

    private static ManifestTensor ParseTensor(JsonElement t)
    {
        var shape = t.GetProperty("shape").EnumerateArray().Select(d => d.ValueKind switch
        {
            JsonValueKind.Number => new ManifestDim(d.GetInt64(), null),
            JsonValueKind.String => new ManifestDim(null, d.GetString()!),
            _ => throw new InvalidDataException($"tensor '{t.GetProperty("name")}' has shape entry {d}"),
        }).ToList();
        string? dtype = t.TryGetProperty("dtype", out var dt) && dt.ValueKind == JsonValueKind.String ? dt.GetString() : null;
        return new ManifestTensor(t.GetProperty("name").GetString()!, shape, dtype);
    }

    private static (List<ManifestRowMapping>, List<ManifestRename>) ParseConversion(JsonElement root)
    {
        var rows = new List<ManifestRowMapping>();
        var renames = new List<ManifestRename>();
        if (!root.TryGetProperty("conversion", out var conv) || !conv.TryGetProperty("mapping", out var mapping)) return (rows, renames);
        foreach (var m in mapping.EnumerateArray())
        {
            var bfl = m.GetProperty("bfl").GetString()!;
            if (m.TryGetProperty("to", out var to))
                rows.AddRange(to.EnumerateArray().Select(r => new ManifestRowMapping(bfl, r[0].GetString()!, r[1].GetInt64(), r[2].GetInt64(), r[3].GetInt64())));
            else
            {
                long[]? from = null, into = null;
                if (m.TryGetProperty("reshape", out var rs))
                {
                    from = rs[0].EnumerateArray().Select(d => d.GetInt64()).ToArray();
                    into = rs[1].EnumerateArray().Select(d => d.GetInt64()).ToArray();
                }
                renames.Add(new ManifestRename(bfl, m.GetProperty("diffusers").GetString()!, from, into));
            }
        }
        return (rows, renames);
    }
}
