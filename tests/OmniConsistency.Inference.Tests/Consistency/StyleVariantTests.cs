using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Tests.Golden;
using Xunit;

namespace OmniConsistency.Inference.Tests.Consistency;

/// <summary>The style variants of the condition-branch golden cases also match with the style LoRA merged into the weights
/// (the policy merges for generations with enough transformer calls), and the model is restored afterwards.</summary>
public class StyleVariantTests
{
    [Theory]
    [InlineData("omni_b1_style")]
    [InlineData("pipeline_b1_style_peft")]
    public void StyleVariantMatchesWithMergedStyleWeights(string name)
    {
        using var c = new GoldenCase(GoldenRoot.Path, name);
        Assert.Contains(c.Loras, l => l.GetProperty("role").GetString() == "style");
        using var scope = TorchSharp.torch.NewDisposeScope();
        var produced = c.Kind == "omni_transformer"
            ? OmniTransformerKind.Run(c, LoraApplication.Merged)
            : PipelineLatentsKind.Run(c, LoraApplication.Merged);
        c.AssertMatches(produced);
    }
}
