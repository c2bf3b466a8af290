using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.TextEncoders;
using OmniConsistency.Inference.Tests.Golden;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.TextEncoders;

/// <summary>Batches, orders and lengths the public golden cases do not use, checked against their expected rows.</summary>
public class TextEncoderGeneralityTests
{
    private static void Close(Tensor expected, Tensor actual, Tolerance tol, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        using var scope = NewDisposeScope();
        var excess = (actual - expected).abs() - (tol.Atol + tol.Rtol * expected.abs());
        Assert.True(excess.max().item<float>() <= 0, $"{what}: exceeds the case tolerance by {excess.max().item<float>()}");
    }

    [Theory]
    [InlineData("clip_text")]
    [InlineData("clip_text_random_ids")]
    public void ClipRowsInAnotherBatchAndOrderMatchTheReference(string caseName)
    {
        using var c = new GoldenCase(GoldenRoot.Path, caseName);
        using var scope = NewDisposeScope();
        using var clip = ClipTextModel.FromPretrained(Path.Combine(c.ModelPath, "text_encoder"), ParameterFactory.Cpu());
        var ids = c.Input("input_ids");
        long n = ids.shape[0];
        var rows = tensor(new long[] { n - 1, 0 });
        using var output = clip.forward(ids.index_select(0, rows));
        Close(c.Expected("last_hidden_state").index_select(0, rows), output.LastHiddenState, c.ToleranceFor("last_hidden_state"), "last_hidden_state");
        Close(c.Expected("pooler_output").index_select(0, rows), output.PooledOutput, c.ToleranceFor("pooler_output"), "pooler_output");

        // Causal attention: a prefix of length 20 sees exactly what the first 20 positions of the 77 saw.
        using var prefix = clip.forward(ids[..1, ..20]);
        Close(c.Expected("last_hidden_state")[..1, ..20], prefix.LastHiddenState, c.ToleranceFor("last_hidden_state"), "prefix");
    }

    [Theory]
    [InlineData("t5_text")]
    [InlineData("t5_text_short")]
    public void T5RowsInAnotherOrderMatchTheReference(string caseName)
    {
        using var c = new GoldenCase(GoldenRoot.Path, caseName);
        using var scope = NewDisposeScope();
        using var t5 = T5EncoderModel.FromPretrained(Path.Combine(c.ModelPath, "text_encoder_2"), ParameterFactory.Cpu());
        var ids = c.Input("input_ids");
        var rows = tensor(new long[] { 1, 0, 1 });
        var output = t5.forward(ids.index_select(0, rows));
        Close(c.Expected("last_hidden_state").index_select(0, rows), output, c.ToleranceFor("last_hidden_state"), "last_hidden_state");
    }

    [Fact]
    public void EncodersAcceptTheWholeIdRange()
    {
        using var scope = NewDisposeScope();
        var folder = Path.Combine(GoldenRoot.Path, "models/tiny-flux");
        using var clip = ClipTextModel.FromPretrained(Path.Combine(folder, "text_encoder"), ParameterFactory.Cpu());
        using var t5 = T5EncoderModel.FromPretrained(Path.Combine(folder, "text_encoder_2"), ParameterFactory.Cpu());
        long clipMax = clip.Config.VocabSize - 1, t5Max = t5.Config.VocabSize - 1;
        var clipIds = tensor(new long[] { 0, clipMax, 5, clipMax, 0, 0, 1, 2 }, [2, 4]);
        using var o = clip.forward(clipIds);
        Assert.False(o.LastHiddenState.isnan().any().item<bool>());
        // pooled at the first largest id: position 1 in row 0, position 3 in row 1 (ids 0,0,1,2)
        Assert.True(o.PooledOutput[0].eq(o.LastHiddenState[0, 1]).all().item<bool>());
        Assert.True(o.PooledOutput[1].eq(o.LastHiddenState[1, 3]).all().item<bool>());
        var t5Out = t5.forward(tensor(new long[] { 0, t5Max, 1, 2 }, [2, 2]));
        Assert.Equal([2L, 2, t5.Config.DModel], t5Out.shape);
        Assert.False(t5Out.isnan().any().item<bool>());
    }
}
