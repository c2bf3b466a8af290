using System.Text.Json;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.Tests.Golden;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Flux;

/// <summary>
/// Manifest checks of the full-size FLUX.1-dev transformer (kind "manifest", component "transformer"): the model built
/// on the meta device from the manifest's config, and the BFL → diffusers conversion applied to the BFL key list.
/// No weights are read or allocated.
/// </summary>
public static class FluxTransformerManifestCheck
{
    /// <summary>layout "diffusers": (name, shape) of the meta-built model == the manifest's tensors; parameter totals agree.</summary>
    public static void CheckDiffusers(GoldenCase c)
    {
        var config = FluxTransformerConfig.FromJsonFile(c.RootPath(c.Params.GetProperty("config_path").GetString()!));
        using var manifest = ReadManifest(c);
        var expected = Tensors(manifest.RootElement);
        using var model = new FluxTransformer2DModel(config, ParameterFactory.Meta());
        var actual = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape, StringComparer.Ordinal);
        AssertSameTensors(expected, actual, "meta-built FluxTransformer2DModel");
        long total = actual.Values.Sum(Numel);
        Assert.Equal(c.Params.GetProperty("total_parameters").GetInt64(), total);
        Assert.Equal(manifest.RootElement.GetProperty("total_parameters").GetInt64(), total);
        Assert.Equal(c.Params.GetProperty("n_tensors").GetInt32(), actual.Count);
        if (manifest.RootElement.TryGetProperty("config_resolved", out var resolved))
        {
            Assert.Equal(resolved.GetProperty("axes_dims_rope").EnumerateArray().Select(e => e.GetInt32()), config.AxesDimsRope);
            Assert.Equal(resolved.GetProperty("guidance_embeds").GetBoolean(), config.GuidanceEmbeds);
        }
    }

    /// <summary>
    /// layout "bfl": the converter applied to the BFL (name, shape) list — plain and with the ComfyUI prefix — consumes
    /// every key, yields exactly the diffusers manifest, loads into the meta-built model, and maps rows as the
    /// manifest's conversion table says.
    /// </summary>
    public static void CheckBfl(GoldenCase c)
    {
        var config = FluxTransformerConfig.FromJsonFile(c.RootPath(c.Params.GetProperty("config_path").GetString()!));
        using var manifest = ReadManifest(c);
        using var target = JsonDocument.Parse(File.ReadAllBytes(c.RootPath(c.Params.GetProperty("target_manifest").GetString()!)));
        var bfl = Tensors(manifest.RootElement);
        var diffusers = Tensors(target.RootElement);
        Assert.Equal(c.Params.GetProperty("n_tensors").GetInt32(), bfl.Count);
        Assert.Equal(c.Params.GetProperty("total_parameters").GetInt64(), bfl.Values.Sum(Numel));

        var (converted, mapping, unconsumed) = BflFluxCheckpointLayout.ToDiffusers(new ShapeOnlyTensorSource("BFL manifest", bfl), config);
        Assert.True(unconsumed.Count == 0, "BFL keys the converter did not consume: " + string.Join(", ", unconsumed));
        AssertSameTensors(diffusers, converted.Keys.ToDictionary(k => k, converted.Shape, StringComparer.Ordinal), "converted BFL manifest");
        AssertMappingMatches(manifest.RootElement.GetProperty("conversion").GetProperty("mapping"), mapping);

        using var model = new FluxTransformer2DModel(config, ParameterFactory.Meta());
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape, StringComparer.Ordinal);
        ModuleWeightLoader.Check(model.GetName(), parameters, converted);

        if (c.Params.TryGetProperty("key_prefix_optional", out var prefix) && prefix.ValueKind == JsonValueKind.String)
        {
            var prefixed = bfl.ToDictionary(kv => prefix.GetString() + kv.Key, kv => kv.Value, StringComparer.Ordinal);
            var stripped = BflFluxCheckpointLayout.StripComfyPrefix(new ShapeOnlyTensorSource("prefixed BFL manifest", prefixed));
            var (convertedPrefixed, _, unconsumedPrefixed) = BflFluxCheckpointLayout.ToDiffusers(stripped, config);
            Assert.Empty(unconsumedPrefixed);
            ModuleWeightLoader.Check(model.GetName(), parameters, convertedPrefixed);
        }
    }

    private static JsonDocument ReadManifest(GoldenCase c) =>
        JsonDocument.Parse(File.ReadAllBytes(c.RootPath(c.Json.GetProperty("manifest").GetString()!)));

    private static Dictionary<string, long[]> Tensors(JsonElement manifest) =>
        manifest.GetProperty("tensors").EnumerateArray().ToDictionary(
            t => t.GetProperty("name").GetString()!,
            t => t.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray(),
            StringComparer.Ordinal);

    private static long Numel(long[] shape) => shape.Aggregate(1L, (a, b) => a * b);

    private static void AssertSameTensors(IReadOnlyDictionary<string, long[]> expected, IReadOnlyDictionary<string, long[]> actual, string what)
    {
        var missing = expected.Keys.Except(actual.Keys).Order(StringComparer.Ordinal).ToList();
        var extra = actual.Keys.Except(expected.Keys).Order(StringComparer.Ordinal).ToList();
        var shapes = expected.Where(kv => actual.TryGetValue(kv.Key, out var s) && !s.SequenceEqual(kv.Value))
            .Select(kv => $"{kv.Key} [{string.Join(",", actual[kv.Key])}] != [{string.Join(",", kv.Value)}]").ToList();
        Assert.True(missing.Count + extra.Count + shapes.Count == 0,
            $"{what} differs from the manifest: missing {string.Join(", ", missing.Take(10))}; extra {string.Join(", ", extra.Take(10))}; shapes {string.Join(", ", shapes.Take(10))}");
    }

    private static void AssertMappingMatches(JsonElement expectedMapping, IReadOnlyList<BflRowMapping> mapping)
    {
        static string Row(string bfl, string key, long d, long b, long e) => $"{bfl} -> {key}[{d}..] = bfl[{b}..{e})";
        var expected = expectedMapping.EnumerateArray().SelectMany(m => m.GetProperty("to").EnumerateArray().Select(t =>
            Row(m.GetProperty("bfl").GetString()!, t[0].GetString()!, t[1].GetInt64(), t[2].GetInt64(), t[3].GetInt64()))).ToHashSet();
        var actual = mapping.Select(m => Row(m.BflKey, m.DiffusersKey, m.DiffusersFirstRow, m.BflFirstRow, m.BflEndRow)).ToHashSet();
        var missing = expected.Except(actual).Take(10).ToList();
        var extra = actual.Except(expected).Take(10).ToList();
        Assert.True(missing.Count + extra.Count == 0, $"row mapping differs: missing {string.Join("; ", missing)}; extra {string.Join("; ", extra)}");
    }
}

/// <summary>A tensor source of names and shapes only (manifests): loading data is an error.</summary>
internal sealed class ShapeOnlyTensorSource(string description, IReadOnlyDictionary<string, long[]> shapes) : ITensorSource
{
    public string Description { get; } = description;
    public IReadOnlyCollection<string> Keys => shapes.Keys.ToList();
    public long[] Shape(string key) => shapes[key];
    public Tensor Load(string key, ScalarType dtype, Device device) => throw new InvalidOperationException($"{Description} has no data ('{key}').");
}

/// <summary>Runs the two transformer manifest checks directly (until the shared manifest runner dispatches to them).</summary>
public class FluxTransformerManifestTests
{
    [Fact]
    public void DiffusersManifest()
    {
        using var c = new GoldenCase(GoldenRoot.Path, "manifest_flux1_dev_transformer_diffusers");
        FluxTransformerManifestCheck.CheckDiffusers(c);
    }

    [Fact]
    public void BflManifest()
    {
        using var c = new GoldenCase(GoldenRoot.Path, "manifest_flux1_dev_transformer_bfl");
        FluxTransformerManifestCheck.CheckBfl(c);
    }
}
