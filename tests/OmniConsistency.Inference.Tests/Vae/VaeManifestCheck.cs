using System.Text.Json;
using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.Tests.Golden;
using OmniConsistency.Inference.Vae;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Vae;

/// <summary>
/// The `manifest` cases of the real FLUX.1 VAE (component "vae"): the module built on the meta device from the
/// published config must have exactly the diffusers checkpoint's names and shapes, and the BFL ae.safetensors key set
/// must convert, through the loader's own conversion, into exactly that checkpoint. The single manifest runner
/// dispatches here by params.layout.
/// </summary>
public static class VaeManifestCheck
{
    public static void CheckManifest(GoldenCase c)
    {
        var layout = c.Params.GetProperty("layout").GetString();
        switch (layout)
        {
            case "diffusers": CheckDiffusers(c); break;
            case "bfl": CheckBfl(c); break;
            default: throw new InvalidDataException($"VAE manifest layout '{layout}' is not known to the VAE checker");
        }
    }

    /// <summary>Meta-device AutoencoderKL from config_path vs. the diffusers manifest (names, shapes, total).</summary>
    public static void CheckDiffusers(GoldenCase c)
    {
        var config = VaeConfig.Load(c.RootPath(c.Params.GetProperty("config_path").GetString()!));
        var manifest = ReadManifest(c.RootPath(c.Json.GetProperty("manifest").GetString()!));
        using var model = new AutoencoderKL(config, ParameterFactory.Meta());
        Assert.All(model.parameters(), p => Assert.Equal(DeviceType.META, p.device_type));
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape, StringComparer.Ordinal);

        AssertSameTensors(manifest.Tensors, parameters, "module parameters");
        Assert.Equal(c.Params.GetProperty("n_tensors").GetInt32(), parameters.Count);
        Assert.Equal(c.Params.GetProperty("total_parameters").GetInt64(), parameters.Values.Sum(Numel));
        // The loader must also accept the file as stored (names, shapes, and the stored dtype converts on load).
        ModuleWeightLoader.Check(nameof(AutoencoderKL), parameters, new ManifestTensorSource(manifest));
        Assert.True(SafetensorsDTypes.TryParse(manifest.StoredDType, out _), $"stored dtype {manifest.StoredDType} is not readable");
    }

    /// <summary>
    /// The BFL ae.safetensors keys through <see cref="VaeCheckpointLayouts"/> (the loader's conversion): every key
    /// converted, the result equal to the target diffusers manifest and to the meta module, and each name mapped from
    /// the same BFL key as diffusers' converter maps it (equal shapes alone would not catch swapped up blocks).
    /// </summary>
    public static void CheckBfl(GoldenCase c)
    {
        var config = VaeConfig.Load(c.RootPath(c.Params.GetProperty("config_path").GetString()!));
        var manifestPath = c.RootPath(c.Json.GetProperty("manifest").GetString()!);
        var bfl = ReadManifest(manifestPath);
        var target = ReadManifest(c.RootPath(c.Params.GetProperty("target_manifest").GetString()!));
        int blocks = config.BlockOutChannels.Count;

        Assert.Equal(c.Params.GetProperty("n_tensors").GetInt32(), bfl.Tensors.Count);
        var unconverted = bfl.Tensors.Keys.Where(k => VaeCheckpointLayouts.BflKeyToDiffusers(k, blocks) is null).ToList();
        Assert.True(unconverted.Count == 0, $"BFL keys with no diffusers name: {string.Join(", ", unconverted)}");
        Assert.True(VaeCheckpointLayouts.IsBfl(bfl.Tensors.Keys), "layout detection does not recognise the BFL key set");

        var source = new ManifestTensorSource(bfl);
        var converted = VaeCheckpointLayouts.FromBfl(source, blocks);
        var convertedShapes = converted.Keys.ToDictionary(k => k, converted.Shape, StringComparer.Ordinal);
        AssertSameTensors(target.Tensors, convertedShapes, "converted BFL keys");
        Assert.Equal(c.Params.GetProperty("total_parameters").GetInt64(), convertedShapes.Values.Sum(Numel));

        using var model = new AutoencoderKL(config, ParameterFactory.Meta());
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape, StringComparer.Ordinal);
        ModuleWeightLoader.Check(nameof(AutoencoderKL), parameters, AutoencoderKL.DiffusersView(source, config));

        using var doc = JsonDocument.Parse(File.ReadAllBytes(manifestPath));
        var wrong = new List<string>();
        foreach (var entry in doc.RootElement.GetProperty("conversion").GetProperty("mapping").EnumerateArray())
        {
            var from = entry.GetProperty("bfl").GetString()!;
            var to = entry.GetProperty("diffusers").GetString()!;
            var ours = VaeCheckpointLayouts.BflKeyToDiffusers(from, blocks);
            if (ours != to) wrong.Add($"{from} -> {ours} (diffusers: {to})");
        }
        Assert.True(wrong.Count == 0, $"{wrong.Count} BFL keys map elsewhere than diffusers' converter: {string.Join("; ", wrong.Take(10))}");
    }

    private sealed record Manifest(Dictionary<string, long[]> Tensors, string StoredDType);

    private static Manifest ReadManifest(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        var tensors = new Dictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var t in doc.RootElement.GetProperty("tensors").EnumerateArray())
            tensors.Add(t.GetProperty("name").GetString()!, t.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray());
        return new Manifest(tensors, doc.RootElement.GetProperty("stored_dtype").GetString()!);
    }

    private static long Numel(long[] shape) => shape.Aggregate(1L, (a, b) => a * b);

    private static void AssertSameTensors(IReadOnlyDictionary<string, long[]> expected, IReadOnlyDictionary<string, long[]> actual, string what)
    {
        var missing = expected.Keys.Where(k => !actual.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var extra = actual.Keys.Where(k => !expected.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var misShaped = expected.Where(kv => actual.TryGetValue(kv.Key, out var s) && !s.SequenceEqual(kv.Value))
            .Select(kv => $"{kv.Key} [{string.Join(",", actual[kv.Key])}] vs manifest [{string.Join(",", kv.Value)}]").ToList();
        Assert.True(missing.Count + extra.Count + misShaped.Count == 0,
            $"{what} differ from the manifest: missing {missing.Count} ({string.Join(", ", missing.Take(10))}); " +
            $"extra {extra.Count} ({string.Join(", ", extra.Take(10))}); wrong shape {misShaped.Count} ({string.Join(", ", misShaped.Take(10))})");
    }

    /// <summary>Names and shapes of a manifest as a tensor source; there is no data to load.</summary>
    private sealed class ManifestTensorSource(Manifest manifest) : ITensorSource
    {
        public string Description => "manifest";
        public IReadOnlyCollection<string> Keys => manifest.Tensors.Keys;
        public long[] Shape(string key) => manifest.Tensors[key];
        public Tensor Load(string key, ScalarType dtype, Device device) =>
            throw new InvalidOperationException("a manifest holds names and shapes only");
    }
}
