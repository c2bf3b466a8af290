using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.Tests.Golden;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Flux;

/// <summary>Golden kind "transformer": one FluxTransformer2DModel forward (diffusers folder or BFL single file), with debug intermediates.</summary>
[GoldenKind("transformer")]
public sealed class TransformerKind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c)
    {
        if (c.Loras.Any()) throw new GoldenCaseNotSupportedException("transformer cases with LoRAs belong to the style_lora kind");
        using var model = GoldenFluxModels.LoadTransformer(c);
        using var capture = new TensorCapture("debug.");
        var inputs = new FluxTransformerInputs(
            c.Input("hidden_states"), c.Input("encoder_hidden_states"), c.Input("pooled_projections"),
            c.Input("timestep"), c.HasInput("guidance") ? c.Input("guidance") : null,
            c.Input("img_ids"), c.Input("txt_ids"));
        var context = new FluxForwardContext { Capture = GoldenFluxModels.DebugRequested(c) ? capture.Sink : null };
        var produced = new Dictionary<string, Tensor> { ["sample"] = model.Forward(inputs, context) };
        foreach (var (name, t) in capture.Tensors) produced[name] = t.clone();
        return produced;
    }
}
