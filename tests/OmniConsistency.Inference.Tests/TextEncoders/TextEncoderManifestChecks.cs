using System.Text.Json;
using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.TextEncoders;
using OmniConsistency.Inference.Tests.Golden;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.TextEncoders;

/// <summary>
/// The `manifest` case of FLUX.1-dev's text_encoder (CLIP-L text tower, component "text_encoder"): the CLIPTextModel
/// built on the meta device from the published config has exactly the checkpoint's names and shapes.
/// Called by the single manifest runner (dispatch by params.component).
/// </summary>
public static class ClipTextManifestCheck
{
    public static void Check(GoldenCase c)
    {
        var config = ClipTextConfig.FromFile(c.RootPath(c.Params.GetProperty("config_path").GetString()!));
        using var model = new ClipTextModel(config, ParameterFactory.Meta());
        TextEncoderManifest.AssertModuleMatches(c, model, nameof(ClipTextModel));
    }
}

/// <summary>
/// The `manifest` case of FLUX.1-dev's text_encoder_2 (T5-v1.1-XXL encoder, component "text_encoder_2"): file keys only,
/// so the tied <c>encoder.embed_tokens.weight</c> must be absent from the module and its target present.
/// </summary>
public static class T5EncoderManifestCheck
{
    public static void Check(GoldenCase c)
    {
        var config = T5EncoderConfig.FromFile(c.RootPath(c.Params.GetProperty("config_path").GetString()!));
        using var model = new T5EncoderModel(config, ParameterFactory.Meta());
        var parameters = TextEncoderManifest.AssertModuleMatches(c, model, nameof(T5EncoderModel));

        using var doc = JsonDocument.Parse(File.ReadAllBytes(c.RootPath(c.Json.GetProperty("manifest").GetString()!)));
        if (doc.RootElement.TryGetProperty("tied", out var tied) && tied.ValueKind == JsonValueKind.Object)
            foreach (var t in tied.EnumerateObject())
            {
                Assert.False(parameters.ContainsKey(t.Name), $"tied weight {t.Name} must not be a separate parameter");
                Assert.True(parameters.ContainsKey(t.Value.GetString()!), $"tie target {t.Value.GetString()} is not a parameter");
            }
    }
}

internal static class TextEncoderManifest
{
    /// <summary>Names + shapes equal the manifest's tensors, counts and total match, and the strict loader accepts them.</summary>
    public static Dictionary<string, long[]> AssertModuleMatches(GoldenCase c, nn.Module model, string moduleName)
    {
        Assert.All(model.parameters(), p => Assert.Equal(DeviceType.META, p.device_type));
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape, StringComparer.Ordinal);

        using var doc = JsonDocument.Parse(File.ReadAllBytes(c.RootPath(c.Json.GetProperty("manifest").GetString()!)));
        var manifest = doc.RootElement.GetProperty("tensors").EnumerateArray().ToDictionary(
            t => t.GetProperty("name").GetString()!,
            t => t.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray(),
            StringComparer.Ordinal);

        var missing = manifest.Keys.Where(k => !parameters.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var extra = parameters.Keys.Where(k => !manifest.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var misShaped = manifest.Where(kv => parameters.TryGetValue(kv.Key, out var s) && !s.SequenceEqual(kv.Value))
            .Select(kv => $"{kv.Key} [{string.Join(",", parameters[kv.Key])}] vs [{string.Join(",", kv.Value)}]").ToList();
        Assert.True(missing.Count + extra.Count + misShaped.Count == 0,
            $"{moduleName} vs manifest: missing {string.Join(", ", missing)}; extra {string.Join(", ", extra)}; mis-shaped {string.Join(", ", misShaped)}");

        Assert.Equal(c.Params.GetProperty("n_tensors").GetInt32(), parameters.Count);
        Assert.Equal(c.Params.GetProperty("total_parameters").GetInt64(), parameters.Values.Sum(s => s.Aggregate(1L, (a, d) => a * d)));

        // The strict loader's own check accepts a checkpoint with exactly these keys (no data is read).
        var source = new MappedTensorSource(c.Name, manifest.ToDictionary(
            kv => kv.Key,
            kv => new MappedTensorSource.Entry(kv.Value, (_, _) => throw new InvalidOperationException("manifest entries have no data")),
            StringComparer.Ordinal));
        ModuleWeightLoader.Check(moduleName, parameters, source);
        if (doc.RootElement.TryGetProperty("stored_dtype", out var dt) && dt.ValueKind == JsonValueKind.String)
            Assert.True(SafetensorsDTypes.TryParse(dt.GetString()!, out _), $"stored dtype {dt.GetString()} is not readable");
        return parameters;
    }
}

/// <summary>Runs the two text-encoder manifest checks directly until the shared manifest runner dispatches to them.</summary>
public class TextEncoderManifestTests
{
    [Fact]
    public void ClipLTextManifestMatches()
    {
        using var c = new GoldenCase(GoldenRoot.Path, "manifest_clip_vit_large_patch14_text");
        ClipTextManifestCheck.Check(c);
    }

    [Fact]
    public void T5XxlEncoderManifestMatches()
    {
        using var c = new GoldenCase(GoldenRoot.Path, "manifest_t5_v1_1_xxl_encoder");
        T5EncoderManifestCheck.Check(c);
    }
}
