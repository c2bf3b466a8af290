using System.Text.RegularExpressions;

namespace OmniConsistency.Inference.Lora;

/// <summary>
/// The per-module scale alpha/rank that diffusers 0.32.2 + peft 0.14 give a diffusers-format LoRA, reproduced
/// including its quirks (spec §9.5, Q29), because that is what users' outputs were tuned against:
/// <list type="bullet">
/// <item>uniform rank: alpha = the module's own <c>.alpha</c>; modules without one get the alpha of the first
///   alpha key (diffusers counts alpha tensors by identity, so "most common" is the first); no alphas: scale 1;</item>
/// <item>mixed ranks (<c>get_peft_kwargs</c> + <c>_maybe_adjust_config</c>): with two or more modules off the most
///   common rank, every alpha becomes the module's own rank (scale 1); with exactly one and no alpha keys, every
///   alpha is the rank of the first <c>lora_B</c> key.</item>
/// </list>
/// Module order is the order of the file's sorted keys, as safetensors returns them to diffusers.
/// </summary>
internal static class PeftScaleResolver
{
    public sealed record Module(string Name, long Rank, double? Alpha);

    /// <param name="modules">Modules in sorted-key order.</param>
    /// <returns>alpha / rank for each module name.</returns>
    public static Dictionary<string, double> Resolve(IReadOnlyList<Module> modules)
    {
        var scales = new Dictionary<string, double>(StringComparer.Ordinal);
        if (modules.Count == 0) return scales;

        // get_peft_kwargs
        long firstRank = modules[0].Rank;
        long r = firstRank;
        double loraAlpha = firstRank;
        var rankPattern = new List<(string Name, long Rank)>();
        if (modules.Select(m => m.Rank).Distinct().Count() > 1)
        {
            r = MostCommon(modules.Select(m => m.Rank));
            rankPattern.AddRange(modules.Where(m => m.Rank != r).Select(m => (m.Name, m.Rank)));
        }
        var alphaPattern = new List<(string Name, double Alpha)>();
        var withAlpha = modules.Where(m => m.Alpha is not null).ToList();
        if (withAlpha.Count > 0)
        {
            loraAlpha = withAlpha[0].Alpha!.Value;
            alphaPattern.AddRange(withAlpha.Skip(1).Where(m => m.Alpha!.Value != loraAlpha).Select(m => (m.Name, m.Alpha!.Value)));
        }

        // _maybe_adjust_config: a rank-pattern key that is a substring of another target ("proj_out" in
        // "single_transformer_blocks.0.proj_out", "transformer_blocks.0.attn.to_q" in "single_transformer_blocks.0.attn.to_q")
        // becomes the default rank and every other module is pinned to the old default.
        var targets = modules.Select(m => m.Name).ToList();
        long originalR = r;
        foreach (var (key, keyRank) in rankPattern.ToList())
        {
            bool exact = targets.Contains(key);
            bool substring = targets.Any(t => t != key && t.Contains(key, StringComparison.Ordinal));
            if (!exact || !substring) continue;
            r = keyRank;
            rankPattern.RemoveAll(p => p.Name == key);
            foreach (var t in targets)
                if (t != key && rankPattern.All(p => p.Name != t)) rankPattern.Add((t, originalR));
        }
        // "list(rank_pattern)[0] != config['r']" compares a name with an int: always true.
        if (rankPattern.Count > 1)
        {
            loraAlpha = r;
            alphaPattern = rankPattern.Select(p => (p.Name, (double)p.Rank)).ToList();
        }

        foreach (var m in modules)
        {
            double alpha = Lookup(alphaPattern, m.Name, loraAlpha);
            scales[m.Name] = alpha / m.Rank;
        }
        return scales;
    }

    // peft's get_pattern_key: the first pattern key k (used as a regex) with re.match(".*\.k$", name), else the name itself.
    private static double Lookup(List<(string Name, double Value)> pattern, string name, double fallback)
    {
        foreach (var (key, value) in pattern)
            if (Regex.IsMatch(name, @"^.*\." + key + "$", RegexOptions.CultureInvariant)) return value;
        foreach (var (key, value) in pattern)
            if (key == name) return value;
        return fallback;
    }

    // collections.Counter(...).most_common()[0][0]: highest count, ties to the first seen.
    private static long MostCommon(IEnumerable<long> values)
    {
        var counts = new List<(long Value, int Count)>();
        foreach (var v in values)
        {
            int i = counts.FindIndex(c => c.Value == v);
            if (i < 0) counts.Add((v, 1));
            else counts[i] = (v, counts[i].Count + 1);
        }
        var best = counts[0];
        foreach (var c in counts) if (c.Count > best.Count) best = c;
        return best.Value;
    }
}
