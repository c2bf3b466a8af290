using System.Text.RegularExpressions;
using OmniConsistency.Inference.IO;

namespace OmniConsistency.Inference.Lora;

/// <summary>One source module of a LoRA file and where it goes, validated against the model's shapes.</summary>
internal sealed record LoraGroup(
    string Path, LoraFormat Format, LoraMapping Mapping,
    string DownKey, string UpKey, string? AlphaKey, string? BiasKey,
    long Rank, long In, long Out, IReadOnlyList<long> PartRows);

/// <summary>What a LoRA file holds and where each part goes; built from the header only (no tensor data read).</summary>
public sealed class LoraPlan
{
    internal LoraPlan(string source, IReadOnlyList<LoraGroup> groups, IReadOnlyList<string> unsupportedKeys)
    {
        Source = source;
        Groups = groups;
        UnsupportedKeys = unsupportedKeys;
        Formats = groups.Select(g => g.Format).ToHashSet();
    }

    public string Source { get; }
    internal IReadOnlyList<LoraGroup> Groups { get; }
    public IReadOnlySet<LoraFormat> Formats { get; }
    public IReadOnlyList<string> UnsupportedKeys { get; }
    /// <summary>Number of model modules the file adapts.</summary>
    public int TargetCount => Groups.Sum(g => g.Mapping.Targets.Count);

    /// <summary>An upper bound of the bytes the converted adapter holds in <paramref name="elementSize"/>-byte elements.</summary>
    public long EstimatedBytes(int elementSize) =>
        Groups.Sum(g => g.Rank * g.In + g.Out * g.Rank + (g.BiasKey is null ? 0 : g.Out)) * elementSize;
}

/// <summary>
/// Reads a LoRA file's header, detects the layout of every key and maps it onto the model's modules, collecting every
/// problem before failing. Layout is decided per module from its key (spec §9.1, minus diffusers' gaps Q21/Q23):
/// <c>lora_unet_*</c>/<c>lora_te*_*</c> = kohya, <c>*_blocks.N.processor.*_lora*</c> = XLabs, BFL names = peft in
/// BFL naming, diffusers names (with or without <c>transformer.</c>) = diffusers/peft.
/// </summary>
internal static class LoraPlanner
{
    private enum Role { Down, Up, UpBias, Alpha }

    // Longest first: ".lora.down.weight" must not be read as XLabs' ".down.weight".
    private static readonly (string Suffix, Role Role)[] Suffixes =
    [
        (".lora_A.weight", Role.Down), (".lora_B.weight", Role.Up), (".lora_B.bias", Role.UpBias),
        (".lora_down.weight", Role.Down), (".lora_up.weight", Role.Up),
        (".lora.down.weight", Role.Down), (".lora.up.weight", Role.Up),
        (".down.weight", Role.Down), (".up.weight", Role.Up),
        (".alpha", Role.Alpha),
    ];

    private static readonly string[] StrippedPrefixes = ["base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer."];

    private static readonly Regex XLabsDouble = new(@"^(?:diffusion_model\.)?double_blocks\.(\d+)\.processor\.(qkv_lora1|qkv_lora2|proj_lora1|proj_lora2)$", RegexOptions.CultureInvariant);
    private static readonly Regex XLabsSingle = new(@"^(?:diffusion_model\.)?single_blocks\.(\d+)\.processor\.(qkv_lora|proj_lora)$", RegexOptions.CultureInvariant);

    private sealed class KeySet
    {
        public string? Down, Up, UpBias, Alpha;
    }

    public static LoraPlan Plan(SafetensorsFile file, LoraModuleMaps maps)
    {
        var source = file.FilePath;
        var problems = new List<string>();
        var unsupported = new List<string>();
        var byPath = new SortedDictionary<string, KeySet>(StringComparer.Ordinal);

        foreach (var key in file.Keys.OrderBy(k => k, StringComparer.Ordinal))
        {
            if (key.EndsWith(".dora_scale", StringComparison.Ordinal) || key.Contains("lora_magnitude_vector", StringComparison.Ordinal))
            {
                problems.Add($"{key}: DoRA magnitude vectors are not supported (applying the LoRA without them would give wrong results)");
                continue;
            }
            var match = Suffixes.FirstOrDefault(s => key.EndsWith(s.Suffix, StringComparison.Ordinal));
            if (match.Suffix is null || key.Length == match.Suffix.Length)
            {
                problems.Add($"{key}: not a LoRA tensor name (expected <module>.lora_A/lora_B.weight, .lora_down/lora_up.weight, .lora.down/up.weight or .alpha)");
                continue;
            }
            var path = key[..^match.Suffix.Length];
            if (!byPath.TryGetValue(path, out var set)) byPath[path] = set = new KeySet();
            ref string? slot = ref set.Down;
            switch (match.Role)
            {
                case Role.Up: slot = ref set.Up; break;
                case Role.UpBias: slot = ref set.UpBias; break;
                case Role.Alpha: slot = ref set.Alpha; break;
            }
            if (slot is not null) problems.Add($"{key}: duplicates {slot} (two spellings of the same tensor)");
            else slot = key;
        }

        var groups = new List<LoraGroup>();
        var claimed = new Dictionary<(string, string), string>();
        foreach (var (path, keys) in byPath)
        {
            var allKeys = new[] { keys.Down, keys.Up, keys.UpBias, keys.Alpha }.Where(k => k is not null).Cast<string>().ToList();
            var resolved = Resolve(path, maps);
            if (resolved.Unsupported is not null)
            {
                unsupported.AddRange(allKeys.Select(k => $"{k} ({resolved.Unsupported})"));
                continue;
            }
            if (resolved.Mapping is null)
            {
                problems.AddRange(allKeys.Select(k => $"{k}: matches no module of the loaded model"));
                continue;
            }
            var group = Validate(file, path, keys, resolved.Format, resolved.Mapping, maps, problems);
            if (group is null) continue;
            foreach (var target in group.Mapping.Targets)
            {
                if (claimed.TryGetValue((group.Mapping.Component, target), out var other))
                    problems.Add($"{group.UpKey}: adapts {target}, which {other} already adapts");
                else claimed[(group.Mapping.Component, target)] = group.UpKey;
            }
            groups.Add(group);
        }

        if (problems.Count > 0)
            throw new LoraFormatException(source, $"{problems.Count} key(s) do not fit the loaded model", problems);
        if (groups.Count == 0)
            throw new LoraFormatException(source, unsupported.Count > 0
                ? "it holds nothing this model can apply (only text-encoder keys, which are not supported here)"
                : "it holds no LoRA tensors", unsupported);
        return new LoraPlan(source, groups, unsupported);
    }

    private sealed record Resolution(LoraFormat Format, LoraMapping? Mapping, string? Unsupported);

    private static Resolution Resolve(string path, LoraModuleMaps maps)
    {
        if (path.StartsWith("lora_te", StringComparison.Ordinal))
        {
            if (maps.TryKohya(path, out var te)) return new(LoraFormat.Kohya, te, null);
            return new(LoraFormat.Kohya, null, path.StartsWith("lora_te2_", StringComparison.Ordinal)
                ? "T5 text-encoder LoRA: not supported"
                : maps.TextEncoder is null ? "CLIP text-encoder LoRA: not supported by this engine yet" : null);
        }
        if (path.StartsWith("lora_unet_", StringComparison.Ordinal) || path.StartsWith("lora_transformer_", StringComparison.Ordinal))
            return new(LoraFormat.Kohya, maps.TryKohya(path, out var k) ? k : null, null);

        var xd = XLabsDouble.Match(path);
        if (xd.Success)
        {
            var bfl = xd.Groups[2].Value switch
            {
                "qkv_lora1" => "img_attn.qkv",
                "qkv_lora2" => "txt_attn.qkv",
                "proj_lora1" => "img_attn.proj",
                _ => "txt_attn.proj",
            };
            return new(LoraFormat.XLabs, maps.TryBfl($"double_blocks.{xd.Groups[1].Value}.{bfl}", out var m) ? m : null, null);
        }
        var xs = XLabsSingle.Match(path);
        if (xs.Success)
        {
            var n = xs.Groups[1].Value;
            if (xs.Groups[2].Value == "proj_lora")
                return new(LoraFormat.XLabs, maps.TryBfl($"single_blocks.{n}.linear2", out var m) ? m : null, null);
            // XLabs' single-block qkv covers q, k and v only (no MLP rows, unlike linear1).
            string[] qkv = [$"single_transformer_blocks.{n}.attn.to_q", $"single_transformer_blocks.{n}.attn.to_k", $"single_transformer_blocks.{n}.attn.to_v"];
            return new(LoraFormat.XLabs, qkv.All(maps.Transformer.Contains) ? new LoraMapping(LoraComponent.Transformer, qkv) : null, null);
        }

        if (path.StartsWith("text_encoder_2.", StringComparison.Ordinal))
            return new(LoraFormat.Diffusers, null, "T5 text-encoder LoRA: not supported");
        if (path.StartsWith("text_encoder.", StringComparison.Ordinal))
        {
            if (maps.TextEncoder is null) return new(LoraFormat.Diffusers, null, "CLIP text-encoder LoRA: not supported by this engine yet");
            return new(LoraFormat.Diffusers, maps.TryTextEncoder(path["text_encoder.".Length..], out var t) ? t : null, null);
        }

        var name = path;
        for (bool stripped = true; stripped;)
        {
            stripped = false;
            foreach (var p in StrippedPrefixes)
                if (name.StartsWith(p, StringComparison.Ordinal))
                {
                    name = name[p.Length..];
                    stripped = true;
                }
        }
        if (maps.TryBfl(name, out var b)) return new(LoraFormat.BflPeft, b, null);
        if (maps.TryDiffusers(name, out var d)) return new(LoraFormat.Diffusers, d, null);
        return new(LoraFormat.Diffusers, null, null);
    }

    private static LoraGroup? Validate(SafetensorsFile file, string path, KeySet keys, LoraFormat format, LoraMapping mapping, LoraModuleMaps maps, List<string> problems)
    {
        int before = problems.Count;
        if (keys.Down is null) problems.Add($"{keys.Up ?? keys.Alpha ?? keys.UpBias}: no matching down / lora_A weight for module '{path}'");
        if (keys.Up is null) problems.Add($"{keys.Down ?? keys.Alpha ?? keys.UpBias}: no matching up / lora_B weight for module '{path}'");
        if (problems.Count > before) return null;

        var down = file.Info(keys.Down!);
        var up = file.Info(keys.Up!);
        foreach (var info in new[] { down, up })
            if (!IsFloat(info.DType)) problems.Add($"{info.Name}: dtype {info.DType} is not a floating-point type");
        if (down.Shape.Length != 2 || down.Shape[0] < 1) problems.Add($"{down.Name}: shape [{string.Join(",", down.Shape)}] is not [rank, in]");
        if (up.Shape.Length != 2) problems.Add($"{up.Name}: shape [{string.Join(",", up.Shape)}] is not [out, rank]");
        if (problems.Count > before) return null;
        long rank = down.Shape[0], inF = down.Shape[1], outF = up.Shape[0];
        if (up.Shape[1] != rank) problems.Add($"{up.Name}: rank {up.Shape[1]} differs from {down.Name}'s rank {rank}");

        if (keys.Alpha is not null)
        {
            var alpha = file.Info(keys.Alpha);
            if (alpha.ElementCount != 1 || !IsFloat(alpha.DType) && alpha.DType is not (SafetensorsDType.I64 or SafetensorsDType.I32))
                problems.Add($"{keys.Alpha}: alpha must be a single number (got {alpha.DType} [{string.Join(",", alpha.Shape)}])");
        }
        if (keys.UpBias is not null)
        {
            var bias = file.Info(keys.UpBias);
            if (!IsFloat(bias.DType) || bias.Shape.Length != 1 || bias.Shape[0] != outF)
                problems.Add($"{keys.UpBias}: shape [{string.Join(",", bias.Shape)}] is not [{outF}]");
        }

        var shapes = maps.ShapesOf(mapping.Component);
        var targetShapes = mapping.Targets.Select(t => shapes.Shapes[t]).ToList();
        long expectedOut = targetShapes.Sum(s => s.Out);
        var describe = string.Join(" + ", mapping.Targets.Zip(targetShapes, (t, s) => $"{t} {s}"));
        if (targetShapes.Any(s => s.In != inF))
            problems.Add($"{down.Name}: input size {inF} does not fit {describe}");
        if (outF != expectedOut)
            problems.Add($"{up.Name}: output size {outF} does not fit {describe}" + (mapping.IsSplit ? $" (split rows {string.Join("/", targetShapes.Select(s => s.Out))})" : ""));
        if (mapping.SwapHalves && outF % 2 != 0)
            problems.Add($"{up.Name}: output size {outF} cannot be split into (shift, scale) halves");
        if (problems.Count > before) return null;
        return new LoraGroup(path, format, mapping, keys.Down!, keys.Up!, keys.Alpha, keys.UpBias, rank, inF, outF, targetShapes.Select(s => s.Out).ToList());
    }

    private static bool IsFloat(SafetensorsDType t) =>
        t is SafetensorsDType.F64 or SafetensorsDType.F32 or SafetensorsDType.F16 or SafetensorsDType.BF16 or SafetensorsDType.F8_E4M3 or SafetensorsDType.F8_E5M2;
}
