using OmniConsistency.Inference.Lora;
using Xunit;
using M = OmniConsistency.Inference.Lora.PeftScaleResolver.Module;

namespace OmniConsistency.Inference.Tests.Lora;

/// <summary>diffusers 0.32.2 + peft 0.14 alpha semantics for diffusers-format files (spec §9.5, Q29).</summary>
public class PeftScaleResolverTests
{
    [Fact]
    public void UniformRankUsesEachModulesAlphaOrScaleOne()
    {
        var s = PeftScaleResolver.Resolve([new M("a.to_q", 4, 6), new M("a.to_k", 4, 2), new M("b", 4, 6)]);
        Assert.Equal(1.5, s["a.to_q"]);
        Assert.Equal(0.5, s["a.to_k"]);
        var none = PeftScaleResolver.Resolve([new M("a", 3, null), new M("b", 3, null)]);
        Assert.All(none.Values, v => Assert.Equal(1.0, v));
    }

    [Fact]
    public void ModulesWithoutAlphaTakeTheFirstAlpha()
    {
        var s = PeftScaleResolver.Resolve([new M("a", 4, 2), new M("b", 4, null), new M("c", 4, 8), new M("d", 4, 8)]);
        Assert.Equal(0.5, s["b"]); // the first alpha (2), not the most common (8): diffusers counts alpha tensors by identity
        Assert.Equal(2.0, s["c"]);
    }

    [Fact]
    public void TwoOrMoreRankDeviationsResetEveryScaleToOne()
    {
        var s = PeftScaleResolver.Resolve([new M("a", 4, 8), new M("b", 8, 8), new M("c", 2, 8), new M("d", 4, 8)]);
        Assert.All(s.Values, v => Assert.Equal(1.0, v));
    }

    [Fact]
    public void OneRankDeviationWithoutAlphasUsesTheFirstRankAsAlpha()
    {
        var s = PeftScaleResolver.Resolve([new M("a", 8, null), new M("b", 4, null), new M("c", 4, null)]);
        Assert.Equal(1.0, s["a"]);
        Assert.Equal(2.0, s["b"]); // alpha = 8 (rank of the first lora_B), rank 4
        // with alphas, one deviation keeps the file's alphas
        var withAlpha = PeftScaleResolver.Resolve([new M("a", 8, 4), new M("b", 4, 4), new M("c", 4, 4)]);
        Assert.Equal(0.5, withAlpha["a"]);
        Assert.Equal(1.0, withAlpha["b"]);
    }

    [Fact]
    public void AmbiguousSubstringModuleNamesResetScales()
    {
        // "transformer_blocks.0.attn.to_q" is a substring of "single_transformer_blocks.0.attn.to_q": diffusers'
        // _maybe_adjust_config pins every other module, which then counts as several deviations.
        var s = PeftScaleResolver.Resolve([
            new M("single_transformer_blocks.0.attn.to_q", 4, 8), new M("single_transformer_blocks.0.attn.to_k", 4, 8),
            new M("transformer_blocks.0.attn.to_q", 2, 8)]);
        Assert.All(s.Values, v => Assert.Equal(1.0, v));
    }
}
