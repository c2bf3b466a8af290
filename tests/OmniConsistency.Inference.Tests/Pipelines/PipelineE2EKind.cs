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
}
