using OmniConsistency.Inference.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Lora;

/// <summary>The model components a LoRA is converted against.</summary>
/// <param name="Transformer">The Flux transformer's Linear modules.</param>
/// <param name="TextEncoder">CLIP-L's Linear modules, or null: text-encoder keys are then reported, not applied.</param>
public sealed record LoraModelTargets(LoraTargetShapes Transformer, LoraTargetShapes? TextEncoder = null)
{
    public string Fingerprint => TextEncoder is null ? Transformer.Fingerprint : $"{Transformer.Fingerprint}+{TextEncoder.Fingerprint}";
}

/// <summary>
/// Loads a LoRA file of any supported layout and converts it once into <see cref="LoraAdapter"/> form: per model
/// module A [r,in], B [out,r], optional B bias, and a scale, in the model's dtype on the model's device.
/// </summary>
public static class LoraLoader
{
    /// <summary>Reads the header only: layout, targets, problems (thrown as <see cref="LoraFormatException"/>).</summary>
    public static LoraPlan Inspect(string path, LoraModelTargets targets)
    {
        using var file = Open(path);
        return LoraPlanner.Plan(file, new LoraModuleMaps(targets.Transformer, targets.TextEncoder));
    }

    public static LoraAdapter Load(string path, LoraModelTargets targets, ScalarType dtype, Device device)
    {
        if (!torch.is_floating_point(empty(0, dtype))) throw new ArgumentException($"LoRA dtype must be floating point, not {dtype}.");
        using var file = Open(path);
        var plan = LoraPlanner.Plan(file, new LoraModuleMaps(targets.Transformer, targets.TextEncoder));
        var scales = PeftScales(file, plan);
        var modules = new List<LoraModule>();
        try
        {
            foreach (var group in plan.Groups)
                modules.AddRange(Convert(file, group, scales, dtype, device));
        }
        catch (Exception e) when (e is not LoraFormatException)
        {
            Dispose(modules);
            throw new LoraFormatException(path, $"reading its tensors failed ({e.Message})", inner: e);
        }
        catch
        {
            Dispose(modules);
            throw;
        }
        var warnings = new List<string>();
        if (plan.UnsupportedKeys.Count > 0)
            warnings.Add($"LoRA '{Path.GetFileName(path)}': {plan.UnsupportedKeys.Count} key(s) not applied: " +
                         string.Join("; ", plan.UnsupportedKeys.Select(k => k[(k.IndexOf(" (", StringComparison.Ordinal) + 2)..].TrimEnd(')')).Distinct()));
        return new LoraAdapter(path, plan.Formats, modules, plan.UnsupportedKeys, warnings, targets.Fingerprint);
    }

    private static SafetensorsFile Open(string path)
    {
        try
        {
            return SafetensorsFile.Open(path);
        }
        catch (SafetensorsFormatException e)
        {
            throw new LoraFormatException(path, e.Problem, inner: e);
        }
        catch (IOException e)
        {
            throw new LoraFormatException(path, $"cannot be read ({e.Message})", inner: e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new LoraFormatException(path, $"cannot be read ({e.Message})", inner: e);
        }
    }

    // diffusers-format scales are resolved per component over the whole file (they depend on every module's rank).
    private static Dictionary<(string, string), double> PeftScales(SafetensorsFile file, LoraPlan plan)
    {
        var result = new Dictionary<(string, string), double>();
        foreach (var component in plan.Groups.Where(g => g.Format == LoraFormat.Diffusers).GroupBy(g => g.Mapping.Component))
        {
            var modules = component.OrderBy(g => g.UpKey, StringComparer.Ordinal)
                .Select(g => new PeftScaleResolver.Module(g.Mapping.Targets[0], g.Rank, g.AlphaKey is null ? null : ReadAlpha(file, g.AlphaKey)))
                .ToList();
            foreach (var (name, scale) in PeftScaleResolver.Resolve(modules)) result[(component.Key, name)] = scale;
        }
        return result;
    }

    private static double ReadAlpha(SafetensorsFile file, string key)
    {
        using var scope = NewDisposeScope();
        var t = file.Load(key, ScalarType.Float64);
        double alpha = t.flatten()[0].item<double>();
        if (!double.IsFinite(alpha)) throw new LoraFormatException(file.FilePath, "an alpha is not finite", [$"{key}: {alpha}"]);
        return alpha;
    }

    // alpha / r as diffusers computes it: a tensor division in the alpha's stored dtype (bf16 alphas give a bf16 scale).
    private static float KohyaScale(SafetensorsFile file, string key, long rank)
    {
        ReadAlpha(file, key); // validates finiteness
        using var scope = NewDisposeScope();
        var alpha = file.Load(key).flatten()[0];
        if (!torch.is_floating_point(alpha)) alpha = alpha.to(ScalarType.Float32);
        return (float)alpha.div(rank).to(ScalarType.Float64).item<double>();
    }

    private static IEnumerable<LoraModule> Convert(SafetensorsFile file, LoraGroup g, Dictionary<(string, string), double> peftScales, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var down = file.Load(g.DownKey);
        var up = file.Load(g.UpKey);
        var bias = g.BiasKey is null ? null : file.Load(g.BiasKey);
        foreach (var (key, t) in new[] { (g.DownKey, down), (g.UpKey, up), (g.BiasKey, bias) })
            if (t is not null && !t.isfinite().all().item<bool>())
                throw new LoraFormatException(file.FilePath, "a tensor holds NaN or infinite values", [$"{key}"]);

        double scale;
        switch (g.Format)
        {
            case LoraFormat.Kohya:
                // diffusers folds alpha/r into the weights, split so neither factor gets tiny (spec §9.2), rounded in
                // the stored dtype; the module scale is then 1.
                float s = g.AlphaKey is null ? 1f : KohyaScale(file, g.AlphaKey, g.Rank);
                float sDown = s;
                double sUp = 1.0;
                while (sDown * 2 < sUp)
                {
                    sDown *= 2;
                    sUp /= 2;
                }
                down = down.to(ScalarType.Float32).mul(sDown).to(down.dtype);
                up = up.to(ScalarType.Float32).mul(sUp).to(up.dtype);
                scale = 1.0;
                break;
            case LoraFormat.Diffusers:
                scale = peftScales[(g.Mapping.Component, g.Mapping.Targets[0])];
                break;
            default:
                // peft files in BFL naming and XLabs files: plain alpha/r (1 without alpha keys).
                scale = g.AlphaKey is null ? 1.0 : ReadAlpha(file, g.AlphaKey) / g.Rank;
                break;
        }

        down = down.to(dtype, device);
        up = up.to(dtype, device);
        bias = bias?.to(dtype, device);
        var modules = new List<LoraModule>();
        var targets = g.Mapping.Targets;
        if (g.Mapping.SwapHalves)
        {
            long h = g.Out / 2;
            up = cat([up.narrow(0, h, h), up.narrow(0, 0, h)], 0);
            if (bias is not null) bias = cat([bias.narrow(0, h, h), bias.narrow(0, 0, h)], 0);
        }
        if (targets.Count == 1)
        {
            modules.Add(new LoraModule(g.Mapping.Component, targets[0], Keep(down), Keep(up), bias is null ? null : Keep(bias), scale));
        }
        else
        {
            var dims = g.PartRows;
            bool sparse = IsBlockDiagonal(up, dims);
            var sharedDown = sparse ? null : Own(down);
            long row = 0;
            for (int j = 0; j < targets.Count; j++)
            {
                var a = sparse ? Own(down.narrow(0, j * (g.Rank / targets.Count), g.Rank / targets.Count)) : sharedDown!;
                var rows = up.narrow(0, row, dims[j]);
                var b = sparse ? Own(rows.narrow(1, j * (g.Rank / targets.Count), g.Rank / targets.Count)) : Own(rows);
                var partBias = bias is null ? null : Own(bias.narrow(0, row, dims[j]));
                modules.Add(new LoraModule(g.Mapping.Component, targets[j], a, b, partBias, scale));
                row += dims[j];
            }
        }
        return modules;
    }

    // kohya's "sparse" fused LoRA: rank divisible by the number of parts and B block-diagonal (every off-diagonal block
    // exactly 0); each part then needs only its own r/n rows of A (same ΔW, n times less work).
    private static bool IsBlockDiagonal(Tensor up, IReadOnlyList<long> dims)
    {
        int n = dims.Count;
        long rank = up.shape[1];
        if (rank % n != 0) return false;
        long part = rank / n;
        long row = 0;
        for (int j = 0; j < n; j++)
        {
            for (int k = 0; k < n; k++)
            {
                if (j == k) continue;
                if (up.narrow(0, row, dims[j]).narrow(1, k * part, part).count_nonzero().item<long>() != 0) return false;
            }
            row += dims[j];
        }
        return true;
    }

    // A contiguous tensor with its own storage (not a view into a larger one), outliving the conversion scope.
    private static Tensor Own(Tensor t) => t.contiguous().clone().DetachFromDisposeScope();

    // The same for a tensor that already owns its storage (fresh from the file or a conversion).
    private static Tensor Keep(Tensor t) => t.contiguous().DetachFromDisposeScope();

    private static void Dispose(IEnumerable<LoraModule> modules)
    {
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var m in modules)
            foreach (var t in new[] { m.A, m.B, m.BBias })
                if (t is not null && seen.Add(t)) t.Dispose();
    }
}
