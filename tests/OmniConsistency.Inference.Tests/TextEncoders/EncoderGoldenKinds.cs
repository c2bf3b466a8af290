using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.TextEncoders;
using OmniConsistency.Inference.Tests.Golden;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.TextEncoders;

[GoldenKind("clip_text")]
public sealed class ClipTextKind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c)
    {
        using var model = ClipTextModel.FromPretrained(Path.Combine(c.ModelPath, "text_encoder"), ParameterFactory.Cpu());
        var output = model.forward(c.Input("input_ids"));
        return new Dictionary<string, Tensor>
        {
            ["last_hidden_state"] = output.LastHiddenState,
            ["pooler_output"] = output.PooledOutput,
        };
    }
}

[GoldenKind("t5_text")]
public sealed class T5TextKind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c)
    {
        using var model = T5EncoderModel.FromPretrained(Path.Combine(c.ModelPath, "text_encoder_2"), ParameterFactory.Cpu());
        return new Dictionary<string, Tensor> { ["last_hidden_state"] = model.forward(c.Input("input_ids")) };
    }
}

[GoldenKind("encode_prompt")]
public sealed class EncodePromptKind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c)
    {
        using var encoder = PromptEncoder.FromPretrained(c.ModelPath, ParameterFactory.Cpu());
        int images = c.Params.TryGetProperty("num_images_per_prompt", out var n) ? n.GetInt32() : 1;
        var encoded = encoder.Encode(c.Params.GetProperty("prompt").GetString()!, null,
            c.Params.GetProperty("max_sequence_length").GetInt32(), images);
        return new Dictionary<string, Tensor>
        {
            ["prompt_embeds"] = encoded.PromptEmbeds,
            ["pooled_prompt_embeds"] = encoded.PooledPromptEmbeds,
            ["text_ids"] = encoded.TextIds,
        };
    }
}
