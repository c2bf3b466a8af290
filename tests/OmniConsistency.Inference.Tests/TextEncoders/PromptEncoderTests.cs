using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.TextEncoders;
using OmniConsistency.Inference.Tests.Golden;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.TextEncoders;

public class PromptEncoderTests
{
    private static readonly Lazy<PromptEncoder> Encoder = new(() =>
        PromptEncoder.FromPretrained(Path.Combine(GoldenRoot.Path, "models/tiny-flux"), ParameterFactory.Cpu()));

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [Fact]
    public void ShapesRepeatsAndTextIds()
    {
        using var scope = NewDisposeScope();
        using var e = Encoder.Value.Encode("a photo of a cat", maxSequenceLength: 40, numImagesPerPrompt: 3);
        Assert.Equal(new long[] { 3, 40, 32 }, e.PromptEmbeds.shape);
        Assert.Equal(new long[] { 3, 32 }, e.PooledPromptEmbeds.shape);
        Assert.Equal(new long[] { 40, 3 }, e.TextIds.shape);
        Assert.Equal(0.0, e.TextIds.abs().sum().item<float>());
        Assert.True(Same(e.PromptEmbeds[0], e.PromptEmbeds[2]));
        Assert.True(Same(e.PooledPromptEmbeds[0], e.PooledPromptEmbeds[1]));
        Assert.False(e.Truncated);
    }

    [Fact]
    public void Prompt2FeedsT5AndDefaultsToPrompt()
    {
        using var scope = NewDisposeScope();
        using var plain = Encoder.Value.Encode("a red house", maxSequenceLength: 16);
        using var emptyP2 = Encoder.Value.Encode("a red house", "", maxSequenceLength: 16);
        using var other = Encoder.Value.Encode("a red house", "a blue boat", maxSequenceLength: 16);
        using var boat = Encoder.Value.Encode("a blue boat", maxSequenceLength: 16);
        Assert.True(Same(plain.PromptEmbeds, emptyP2.PromptEmbeds));
        Assert.True(Same(other.PooledPromptEmbeds, plain.PooledPromptEmbeds));
        Assert.True(Same(other.PromptEmbeds, boat.PromptEmbeds));
    }

    [Fact]
    public void BatchRowsMatchSingleEncodes()
    {
        using var scope = NewDisposeScope();
        using var batch = Encoder.Value.Encode(["a photo of a cat", "東京タワー at night"], null, 24, 2);
        using var second = Encoder.Value.Encode("東京タワー at night", maxSequenceLength: 24);
        Assert.Equal(4, batch.PromptEmbeds.shape[0]);
        Assert.True((batch.PromptEmbeds[2] - second.PromptEmbeds[0]).abs().max().item<float>() < 1e-5f);
        Assert.True((batch.PooledPromptEmbeds[3] - second.PooledPromptEmbeds[0]).abs().max().item<float>() < 1e-5f);
    }

    [Fact]
    public void TruncationIsReportedPerTokenizer()
    {
        using var scope = NewDisposeScope();
        var prompt = string.Join(" ", Enumerable.Repeat("cat", 90));
        using var e = Encoder.Value.Encode(prompt, maxSequenceLength: 128);
        Assert.True(e.Truncated);
        Assert.True(e.ClipTokens[0].Truncated);
        Assert.Equal(15, e.ClipTokens[0].DroppedTokenCount);
        Assert.False(e.T5Tokens[0].Truncated);
    }

    [Fact]
    public void BadArgumentsAreRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Encoder.Value.Encode("x", maxSequenceLength: 513));
        Assert.Throws<ArgumentOutOfRangeException>(() => Encoder.Value.Encode("x", maxSequenceLength: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Encoder.Value.Encode("x", numImagesPerPrompt: 0));
        Assert.Throws<ArgumentException>(() => Encoder.Value.Encode(["a", "b"], ["c"]));
        Assert.Throws<ArgumentException>(() => Encoder.Value.Encode(Array.Empty<string>()));
    }
}

public class ScopedLoadingTests
{
    [Fact]
    public void ModelsLoadedInsideADisposeScopeKeepTheirWeights()
    {
        PromptEncoder encoder;
        using (NewDisposeScope())
            encoder = PromptEncoder.FromPretrained(Path.Combine(GoldenRoot.Path, "models/tiny-flux"), ParameterFactory.Cpu());
        using (encoder)
        using (NewDisposeScope())
        using (var e = encoder.Encode("still alive", maxSequenceLength: 8))
            Assert.Equal(new long[] { 1, 8, 32 }, e.PromptEmbeds.shape);
    }
}
