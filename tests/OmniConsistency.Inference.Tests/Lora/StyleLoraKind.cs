using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Tests.Flux;
using OmniConsistency.Inference.Tests.Golden;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Lora;

/// <summary>
/// Golden kind "style_lora": the case's transformer with its style LoRAs (each at its adapter weight <c>scale</c>,
/// all under <c>params.lora_scale</c>) applied, one forward. <see cref="Run(GoldenCase, LoraApplication)"/>
/// also serves the merged-weights check.
/// </summary>
[GoldenKind("style_lora")]
public sealed class StyleLoraKind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c) => Run(c, LoraApplication.RunTime);

    public static IReadOnlyDictionary<string, Tensor> Run(GoldenCase c, LoraApplication mode)
    {
        foreach (var lora in c.Loras)
        {
            var role = lora.TryGetProperty("role", out var r) ? r.GetString() : "style";
            if (role != "style") throw new GoldenCaseNotSupportedException($"a '{role}' LoRA in a style_lora case");
        }
        return TransformerKind.Run(c, mode);
    }
}
