using Xunit;

namespace OmniConsistency.Inference.Tests.Golden;

/// <summary>One test per case folder under the golden root; the test's display name is the folder name.</summary>
[Trait("Category", "Golden")]
public class GoldenTests
{
    public static IEnumerable<TheoryDataRow<string>> Cases()
    {
        var casesDir = Path.Combine(GoldenRoot.Path, "cases");
        if (!Directory.Exists(casesDir))
            throw new DirectoryNotFoundException($"Golden cases not found at {casesDir} (set OMNI_GOLDEN_DIR).");
        foreach (var dir in Directory.GetDirectories(casesDir).OrderBy(d => d, StringComparer.Ordinal))
        {
            var name = Path.GetFileName(dir);
            yield return new TheoryDataRow<string>(name) { TestDisplayName = name };
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Case(string name)
    {
        using var c = new GoldenCase(GoldenRoot.Path, name);
        if (!GoldenKinds.Runners.TryGetValue(c.Kind, out var runnerType))
            Assert.Fail($"{name}: unknown golden kind '{c.Kind}'");
        var runner = (IGoldenKindRunner)Activator.CreateInstance(runnerType!)!;
        using var scope = TorchSharp.torch.NewDisposeScope();
        IReadOnlyDictionary<string, TorchSharp.torch.Tensor> produced;
        try
        {
            produced = runner.Run(c);
        }
        catch (GoldenCaseNotSupportedException e)
        {
            Assert.Skip(e.Message);
            return;
        }
        c.AssertMatches(produced);
    }
}
