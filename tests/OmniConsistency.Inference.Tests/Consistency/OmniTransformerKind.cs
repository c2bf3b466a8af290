using OmniConsistency.Inference.Consistency;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Tests.Flux;
using OmniConsistency.Inference.Tests.Golden;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Consistency;

/// <summary>Golden kind "omni_transformer": the warm-up pass fills a bank, then two denoising calls reuse it.</summary>
[GoldenKind("omni_transformer")]
public sealed class OmniTransformerKind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c) => Run(c, LoraApplication.RunTime);

    /// <param name="styleMode">How the case's style LoRAs (if any) are applied: run-time adapters or merged weights.</param>
    public static IReadOnlyDictionary<string, Tensor> Run(GoldenCase c, LoraApplication styleMode)
    {
        var loraEntry = GoldenConsistencyLora.From(c);
        using var model = GoldenFluxModels.LoadTransformer(c);
        using var lora = loraEntry?.Load(model);
        using var styles = GoldenStyleLoras.Attach(c, model, styleMode);
        var condLatents = c.Input("cond_latents");
        long conditionTokens = condLatents.shape[1];
        GoldenConsistencyLora.RequireConditionTokens(c, loraEntry, conditionTokens);
        var text = c.Input("encoder_hidden_states");
        var pooled = c.Input("pooled_projections");
        var guidance = c.Input("guidance");
        var textIds = c.Input("txt_ids");
        GoldenParamChecks.RequireEqual(c, "batch", condLatents.shape[0]);
        GoldenParamChecks.RequireEqual(c, "txt_len", text.shape[1]);
        GoldenParamChecks.RequireImageTokens(c, c.Input("latents_step1").shape[1]);
        // The warm-up always runs at t = 0 (ConditionBranch.Warmup), as upstream's pipeline does.
        if (c.HasInput("timestep_warmup") && !c.Input("timestep_warmup").eq(0).all().item<bool>())
            throw new InvalidOperationException("timestep_warmup is not all zeros; the warm-up pass runs at t = 0");

        using var capture = new TensorCapture("debug.");
        var warmup = ConditionBranch.Warmup(model, lora,
            new ConditionWarmupInputs(condLatents, c.Input("cond_img_ids"), text, pooled, guidance, textIds),
            loraEntry?.Weight ?? 1.0, capture.Sink);
        using var bank = warmup.Bank;
        var produced = new Dictionary<string, Tensor> { ["out_warmup"] = warmup.Output };
        foreach (var (name, t) in capture.Tensors.Where(kv => kv.Key.StartsWith("debug.bank.", StringComparison.Ordinal)))
            produced[name] = t.clone();

        // The step's img_ids are [noise ids; condition ids]; the bank already carries the condition positions.
        var imageIds = c.Input("img_ids");
        long noiseTokens = c.Input("latents_step1").shape[1];
        if (imageIds.shape[0] != noiseTokens + conditionTokens
            || !imageIds.narrow(0, noiseTokens, conditionTokens).allclose(c.Input("cond_img_ids"), rtol: 0, atol: 1e-6))
            throw new InvalidOperationException("img_ids is not [noise ids; cond_img_ids]: the step's condition positions would differ from the bank's");
        foreach (var step in new[] { "step1", "step2" })
        {
            var latents = c.Input($"latents_{step}");
            var inputs = new FluxTransformerInputs(latents, text, pooled, c.Input($"timestep_{step}"), guidance,
                imageIds.narrow(0, 0, latents.shape[1]), textIds);
            produced[$"out_{step}"] = model.Forward(inputs, new FluxForwardContext { Attention = bank });
        }
        return produced;
    }
}
