using System.Reflection;
using OmniConsistency.Inference.Nn;
using TorchSharp;
using Xunit;
using Xunit.Sdk;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Golden;

public class ManifestHelpersTests
{
    private static IEnumerable<string> ManifestCaseNames() =>
        Directory.GetDirectories(Path.Combine(GoldenRoot.Path, "cases"))
            .Where(d => File.Exists(Path.Combine(d, "case.json")) && KindOf(Path.Combine(d, "case.json")) == "manifest")
            .Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal);

    private static string? KindOf(string caseJson)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(caseJson));
        return doc.RootElement.TryGetProperty("kind", out var k) ? k.GetString() : null;
    }

    [Fact]
    public void EveryManifestCaseLoadsConsistentlyAndHasACheckerEntry()
    {
        var names = ManifestCaseNames().ToList();
        Assert.NotEmpty(names);
        foreach (var name in names)
        {
            using var c = new GoldenCase(GoldenRoot.Path, name);
            Assert.Equal("manifest", c.Kind);
            var m = ManifestFile.Load(c);
            Assert.True(ManifestKind.Checkers.ContainsKey((m.Component, m.Layout)), $"{name}: no checker entry for {m.Component}/{m.Layout}");
            Assert.Equal(m.NTensors, m.Tensors.Count);
            Assert.True(File.Exists(m.ConfigPath), $"{name}: config {m.ConfigPath}");
            var parameters = m.Parameters(m.IsSymbolic ? 3 : null);
            Assert.Equal(parameters.Select(p => p.Name).Order(StringComparer.Ordinal), parameters.Select(p => p.Name)); // sorted by name
            if (c.Params.TryGetProperty("target_manifest", out _))
            {
                var target = ManifestFile.LoadReferenced(c, "target_manifest");
                Assert.Equal((m.Component, "diffusers"), (target.Component, target.Layout));
                Assert.Equal(m.TotalParameters(), target.TotalParameters());
            }
        }
    }

    [Fact]
    public void BflManifestsCarryTheirConversionTables()
    {
        using var t = new GoldenCase(GoldenRoot.Path, "manifest_flux1_dev_transformer_bfl");
        var transformer = ManifestFile.Load(t);
        var target = ManifestFile.LoadReferenced(t, "target_manifest");
        Assert.Equal("diffusers", target.Layout);
        Assert.Equal(transformer.Tensors.Select(x => x.Name).ToHashSet(), transformer.RowMappings.Select(r => r.BflKey).ToHashSet());
        Assert.Equal(target.Tensors.Select(x => x.Name).ToHashSet(), transformer.RowMappings.Select(r => r.DiffusersKey).ToHashSet());
        var swapped = transformer.RowMappings.Where(r => r.BflKey == "final_layer.adaLN_modulation.1.weight").OrderBy(r => r.BflFirstRow).ToList();
        Assert.Equal(2, swapped.Count);
        Assert.True(swapped[0].DiffusersFirstRow > swapped[1].DiffusersFirstRow, "[shift; scale] -> [scale; shift]");
        Assert.Empty(transformer.Renames);

        using var v = new GoldenCase(GoldenRoot.Path, "manifest_flux1_vae_bfl");
        var vae = ManifestFile.Load(v);
        Assert.Equal(vae.NTensors, vae.Renames.Count);
        Assert.Contains(vae.Renames, r => r.FromShape is { Length: 4 } && r.ToShape is { Length: 2 });
        Assert.Empty(vae.RowMappings);
    }

    [Fact]
    public void LoraManifestShapesAreSymbolicInTheRank()
    {
        using var c = new GoldenCase(GoldenRoot.Path, "manifest_omniconsistency_lora");
        var m = ManifestFile.Load(c);
        Assert.True(m.IsSymbolic);
        Assert.Equal("r", m.RankSymbol);
        Assert.Throws<InvalidOperationException>(() => m.Parameters());
        Assert.Throws<InvalidOperationException>(() => m.TotalParameters());
        foreach (long r in new long[] { 1, 4, 17 })
        {
            var p = m.Parameters(r);
            Assert.All(p.Where(x => x.Name.EndsWith(".down.weight", StringComparison.Ordinal)), x => Assert.Equal(r, x.Shape[0]));
            Assert.All(p.Where(x => x.Name.EndsWith(".up.weight", StringComparison.Ordinal)), x => Assert.Equal(r, x.Shape[1]));
            Assert.Equal(m.Root.GetProperty("total_parameters_per_rank").GetInt64() * r, m.TotalParameters(r));
            ManifestAssert.SameParameters(m, p.Reverse(), r);
        }
        using var t5 = new GoldenCase(GoldenRoot.Path, "manifest_t5_v1_1_xxl_encoder");
        var t5m = ManifestFile.Load(t5);
        Assert.Equal("shared.weight", t5m.Tied["encoder.embed_tokens.weight"]);
        Assert.DoesNotContain(t5m.Tensors, x => x.Name == "encoder.embed_tokens.weight");
        Assert.False(t5m.IsSymbolic);
        Assert.Equal(4_762_310_656L, t5m.TotalParameters());
    }

    [Fact]
    public void SameParametersReportsEveryKindOfDifference()
    {
        var expected = new List<(string, long[])> { ("a.weight", [4, 3]), ("a.bias", [4]), ("b.weight", [2, 4]), ("c.scale", [8]) };
        ManifestAssert.SameParameters(expected, expected.AsEnumerable().Reverse(), 4 * 3 + 4 + 8 + 8);

        var actual = new List<(string, long[])> { ("a.weight", [3, 4]), ("a.bias", [4]), ("b.weight", [2, 4]), ("b.weight", [2, 4]), ("d.extra", [5]) };
        var e = Assert.Throws<XunitException>(() => ManifestAssert.SameParameters(expected, actual, 32, "TinyModule"));
        Assert.Contains("TinyModule does not match the manifest", e.Message);
        Assert.Contains("missing (in the manifest, not in the module) (1):\n    c.scale [8]", e.Message);
        Assert.Contains("extra (in the module, not in the manifest) (1):\n    d.extra [5]", e.Message);
        Assert.Contains("a.weight: expected [4,3], actual [3,4]", e.Message);
        Assert.Contains("b.weight (x2)", e.Message);
        Assert.Contains("total parameters: expected 32, actual 37", e.Message);

        // Same names and shapes but a different total: only the total is reported.
        e = Assert.Throws<XunitException>(() => ManifestAssert.SameParameters(expected, expected, 33));
        Assert.DoesNotContain("missing", e.Message);
        Assert.Contains("expected 33, actual 32", e.Message);
    }

    [Fact]
    public void SameParametersListsAtMost25NamesPerSection()
    {
        using var c = new GoldenCase(GoldenRoot.Path, "manifest_flux1_dev_transformer_diffusers");
        var m = ManifestFile.Load(c);
        var actual = m.Parameters().Where(p => !p.Name.StartsWith("single_transformer_blocks.3", StringComparison.Ordinal)).ToList();
        var e = Assert.Throws<XunitException>(() => ManifestAssert.SameParameters(m, actual, what: "FluxTransformer2DModel"));
        int dropped = m.NTensors - actual.Count;
        Assert.Contains($"missing (in the manifest, not in the module) ({dropped}):", e.Message);
        Assert.Contains($"... and {dropped - 25} more", e.Message);
        Assert.Contains("flux1-dev-transformer-diffusers.json", e.Message);
    }

    private sealed class Tiny : nn.Module<Tensor, Tensor>
    {
        public Linear proj;
        public LayerNorm norm;

        public Tiny(ParameterFactory f) : base(nameof(Tiny))
        {
            proj = new Linear(6, 4, f);
            norm = new LayerNorm(4, f, hasBias: false);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => x;
    }

    [Fact]
    public void ModuleHelpersReadNamesAndShapesAndDetectMaterialisedWeights()
    {
        using var meta = new Tiny(ParameterFactory.Meta());
        ManifestAssert.NotMaterialised(meta);
        var parameters = ManifestAssert.ParametersOf(meta);
        ManifestAssert.SameParameters([("norm.weight", [4]), ("proj.bias", [4]), ("proj.weight", [4, 6])], parameters, 32);
        using var cpu = new Tiny(ParameterFactory.Cpu());
        var e = Assert.Throws<XunitException>(() => ManifestAssert.NotMaterialised(cpu, "Tiny"));
        Assert.Contains("3 parameters off the meta device", e.Message);
    }

    [Fact]
    public void TheRunnerIsTheOnlyManifestKind()
    {
        Assert.Equal(typeof(ManifestKind), GoldenKinds.Runners["manifest"]);
        Assert.Single(typeof(ManifestKind).Assembly.GetTypes(), t => t.GetCustomAttributes<GoldenKindAttribute>().Any(a => a.Kind == "manifest"));
    }
}
