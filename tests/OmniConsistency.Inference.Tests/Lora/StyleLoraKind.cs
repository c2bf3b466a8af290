using System.Text.Json;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Tests.Flux;
using OmniConsistency.Inference.Tests.Golden;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Lora;

/// <summary>
/// Golden kind "style_lora": the case's transformer with its style LoRAs (each at its adapter weight <c>scale</c>,
/// all under <c>params.lora_scale</c>) applied as run-time adapters, one forward. <see cref="Run(GoldenCase, LoraApplication)"/>
/// also serves the merged-weights check.
/// </summary>
[GoldenKind("style_lora")]
public sealed class StyleLoraKind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c) => Run(c, LoraApplication.RunTime);

    public static IReadOnlyDictionary<string, Tensor> Run(GoldenCase c, LoraApplication mode)
    {
        using var model = GoldenFluxModels.LoadTransformer(c);
        var targets = new LoraTargetModules(model);
        var loraTargets = new LoraModelTargets(targets.Shapes);
        var set = new LoraAdapterSet(c.Params.TryGetProperty("lora_scale", out var ls) && ls.ValueKind == JsonValueKind.Number ? ls.GetDouble() : 1.0);
        var adapters = new List<LoraAdapter>();
        try
        {
            foreach (var lora in c.Loras)
            {
                var role = lora.TryGetProperty("role", out var r) ? r.GetString() : "style";
                if (role != "style") throw new GoldenCaseNotSupportedException($"a '{role}' LoRA in a style_lora case");
                var adapter = LoraLoader.Load(c.RootPath(lora.GetProperty("path").GetString()!), loraTargets, model.DType, model.Device);
                adapters.Add(adapter);
                set.Add(adapter, lora.TryGetProperty("scale", out var s) && s.ValueKind == JsonValueKind.Number ? s.GetDouble() : 1.0);
            }
            using var applied = set.Apply(mode, targets);
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
        finally
        {
            foreach (var a in adapters) a.Dispose();
        }
    }
}
