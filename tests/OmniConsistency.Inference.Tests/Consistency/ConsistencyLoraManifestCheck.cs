using System.Text.Json;
using OmniConsistency.Inference.Consistency;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.Tests.Flux;
using OmniConsistency.Inference.Tests.Golden;
using Xunit;

namespace OmniConsistency.Inference.Tests.Consistency;

/// <summary>
/// Manifest check of OmniConsistency.safetensors (kind "manifest", component "consistency_lora"): with the symbolic
/// rank substituted, the manifest's (name, shape) list is exactly what <see cref="ConsistencyLora"/> expects for the
/// transformer built from the config, passes its validation (which reads the rank back), and counts 1167360·r parameters.
/// </summary>
public static class ConsistencyLoraManifestCheck
{
    public static void Check(GoldenCase c)
    {
        var config = FluxTransformerConfig.FromJsonFile(c.RootPath(c.Params.GetProperty("config_path").GetString()!));
        using var manifest = JsonDocument.Parse(File.ReadAllBytes(c.RootPath(c.Json.GetProperty("manifest").GetString()!)));
        using var transformer = JsonDocument.Parse(File.ReadAllBytes(c.RootPath(c.Params.GetProperty("transformer_manifest").GetString()!)));
        var symbol = c.Params.TryGetProperty("rank_symbol", out var s) ? s.GetString()! : "r";
        long perRank = manifest.RootElement.GetProperty("total_parameters_per_rank").GetInt64();
        Assert.Equal($"{perRank}*{symbol}", c.Params.GetProperty("total_parameters").GetString());
        var transformerTensors = transformer.RootElement.GetProperty("tensors").EnumerateArray().ToDictionary(
            t => t.GetProperty("name").GetString()!, t => t.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray());

        foreach (int rank in new[] { 1, 17, 128 })
        {
            var tensors = manifest.RootElement.GetProperty("tensors").EnumerateArray().ToDictionary(
                t => t.GetProperty("name").GetString()!,
                t => t.GetProperty("shape").EnumerateArray().Select(d => d.ValueKind == JsonValueKind.String && d.GetString() == symbol ? rank : d.GetInt64()).ToArray(),
                StringComparer.Ordinal);
            Assert.Equal(c.Params.GetProperty("n_tensors").GetInt32(), tensors.Count);
            var expected = ConsistencyLora.ExpectedShapes(config, rank);
            Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), tensors.Keys.Order(StringComparer.Ordinal));
            foreach (var (name, shape) in tensors) Assert.Equal(expected[name], shape);
            Assert.Equal(rank, ConsistencyLora.Validate(new ShapeOnlyTensorSource("LoRA manifest", tensors), config));
            Assert.Equal(perRank * rank, tensors.Values.Sum(v => v.Aggregate(1L, (a, b) => a * b)));
        }

        // Every processor belongs to an attention of the transformer manifest, whose projections the LoRA pairs fit.
        for (int layer = 0; layer < config.TotalAttentionLayers; layer++)
        {
            var attention = config.AttentionProcessorName(layer)[..^".processor".Length];
            Assert.True(transformerTensors.TryGetValue($"{attention}.to_q.weight", out var toQ), $"{attention}.to_q.weight is not in the transformer manifest");
            Assert.Equal(new long[] { config.InnerDim, config.InnerDim }, toQ);
        }
    }
}

public class ConsistencyLoraManifestTests
{
    [Fact]
    public void OmniConsistencyLoraManifest()
    {
        using var c = new GoldenCase(GoldenRoot.Path, "manifest_omniconsistency_lora");
        ConsistencyLoraManifestCheck.Check(c);
    }
}
