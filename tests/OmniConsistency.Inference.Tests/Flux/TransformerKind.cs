using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Tests.Consistency;
using OmniConsistency.Inference.Tests.Golden;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Flux;

/// <summary>
/// Golden kind "transformer": one FluxTransformer2DModel forward (diffusers folder or BFL single file), with debug
/// intermediates. The case's style LoRAs, if any, are applied first (the style_lora kind is this forward with LoRAs).
/// </summary>
[GoldenKind("transformer")]
public sealed class TransformerKind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c) => Run(c, LoraApplication.RunTime);

    /// <param name="styleMode">How the case's style LoRAs are applied: run-time adapters or merged weights.</param>
    public static IReadOnlyDictionary<string, Tensor> Run(GoldenCase c, LoraApplication styleMode)
    {
        using var model = GoldenFluxModels.LoadTransformer(c);
        using var styles = GoldenStyleLoras.Attach(c, model, styleMode);
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
