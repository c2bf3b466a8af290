using System.Text.Json;
using OmniConsistency.Inference.Imaging;
using OmniConsistency.Inference.Pipelines;
using OmniConsistency.Inference.Tests.Consistency;
using OmniConsistency.Inference.Tests.Golden;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Pipelines;

/// <summary>
/// Golden kind "pipeline_e2e": OmniConsistency's FluxPipeline end to end in fp32 on the CPU, from the prompt and
/// cond.png (decoded and fitted as the engine does) to the [0, 1] image, with the case's noise and condition ε, the
/// consistency LoRA and (style case) a style LoRA loaded as infer.py does (scale 1).
/// </summary>
[GoldenKind("pipeline_e2e")]
public sealed class PipelineE2EKind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c) => Run(c, models: null);

    /// <param name="models">How to load the model set (its consistency LoRA is the case's); null = the case's diffusers folder.</param>
    public static IReadOnlyDictionary<string, Tensor> Run(GoldenCase c, FluxModelSetOptions? models)
    {
        var consistency = GoldenConsistencyLora.From(c) ?? throw new InvalidOperationException($"{c.Name} has no consistency LoRA");
        return Run(c, consistency, FluxModelSet.Load((models ?? new FluxModelSetOptions { ModelFolder = c.ModelPath, Device = "cpu", DType = "float32" })
            with { ConsistencyLoraFile = consistency.Path }));
    }

    private static IReadOnlyDictionary<string, Tensor> Run(GoldenCase c, GoldenConsistencyLora consistency, FluxModelSet loaded)
    {
        var p = c.Params;
        using var models = loaded;
        using var styles = GoldenStyleLoras.Attach(c, models.Transformer);

        int condSize = p.GetProperty("cond_size").GetInt32();
        if (consistency.CondSize is int cs && cs != condSize) throw new InvalidOperationException($"cond_size {cs} of the LoRA entry differs from the call's {condSize}");
        int side = ConditionImage.SquareSize(condSize) / 16;
        GoldenConsistencyLora.RequireConditionTokens(c, consistency, (long)side * side);
        RequireCallShape(c, consistency);
        var png = File.ReadAllBytes(Path.Combine(c.Dir, p.GetProperty("files").GetProperty("condition_png").GetString()!));
        var photo = new ImageCodec().Decode(png);
        var condition = ConditionImage.Prepare(photo, condSize, ConditionFit.Stretch);

        using var noise = GenerationNoise.FromTensors(c.Input("noise"), c.Input("cond_eps"));
        using var capture = new Inference.Flux.TensorCapture();
        var inputs = new OmniConsistencyInputs
        {
            Prompt = p.GetProperty("prompt").GetString()!,
            Prompt2 = p.TryGetProperty("prompt_2", out var p2) && p2.ValueKind == System.Text.Json.JsonValueKind.String ? p2.GetString() : null,
            Height = p.GetProperty("height").GetInt32(),
            Width = p.GetProperty("width").GetInt32(),
            Steps = p.GetProperty("num_inference_steps").GetInt32(),
            GuidanceScale = p.GetProperty("guidance_scale").GetDouble(),
            MaxSequenceLength = p.GetProperty("max_sequence_length").GetInt32(),
            ConditionImage = condition,
            ConsistencyWeight = consistency.Weight,
        };
        using var output = new OmniConsistencyPipeline(models).Run(inputs, noise, capture: capture.Sink);
        var produced = capture.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        produced["image"] = output.Image.clone();
        return produced;
    }

    /// <summary>
    /// The call parameters this runner takes from elsewhere (the loras entries) or cannot vary must agree with them:
    /// one image per prompt, exactly one spatial image and no subject images, omni_lora_weights = the consistency
    /// entry's lora_weights, style_lora_scale = the style entry's scale.
    /// </summary>
    private static void RequireCallShape(GoldenCase c, GoldenConsistencyLora consistency)
    {
        var p = c.Params;
        if (p.TryGetProperty("num_images_per_prompt", out var n) && n.ValueKind == JsonValueKind.Number && n.GetInt32() != 1)
            throw new GoldenCaseNotSupportedException($"num_images_per_prompt {n.GetInt32()} (upstream runs batch 1 only)");
        if (p.TryGetProperty("spatial_images", out var spatial) && spatial.ValueKind == JsonValueKind.Array && spatial.GetArrayLength() != 1)
            throw new GoldenCaseNotSupportedException($"{spatial.GetArrayLength()} spatial images (OmniConsistency passes exactly one)");
        if (p.TryGetProperty("subject_images", out var subject) && subject.ValueKind == JsonValueKind.Array && subject.GetArrayLength() != 0)
            throw new GoldenCaseNotSupportedException("subject images (the EasyControl subject branch is not implemented)");
        if (p.TryGetProperty("omni_lora_weights", out var ow) && ow.ValueKind == JsonValueKind.Array
            && !ow.EnumerateArray().Select(e => e.GetDouble()).SequenceEqual([consistency.Weight]))
            throw new InvalidOperationException($"params.omni_lora_weights {ow} differ from the consistency entry's lora_weights [{consistency.Weight}]");
        if (p.TryGetProperty("style_lora_scale", out var ss) && ss.ValueKind == JsonValueKind.Number)
        {
            var styleScales = c.Loras.Where(l => l.TryGetProperty("role", out var r) && r.GetString() == "style")
                .Select(l => l.TryGetProperty("scale", out var s) && s.ValueKind == JsonValueKind.Number ? s.GetDouble() : 1.0).ToList();
            if (styleScales.Count == 0 || styleScales.Any(s => s != ss.GetDouble()))
                throw new InvalidOperationException($"params.style_lora_scale {ss.GetDouble()} differs from the style entries' scales [{string.Join(", ", styleScales)}]");
        }
    }
}
