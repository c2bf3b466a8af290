using OmniConsistency.Inference.Consistency;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Sampling;
using OmniConsistency.Inference.Tests.Flux;
using OmniConsistency.Inference.Tests.Golden;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Consistency;

/// <summary>Golden kind "pipeline_latents": the whole conditioned denoising loop from embeddings, condition latents and noise.</summary>
[GoldenKind("pipeline_latents")]
public sealed class PipelineLatentsKind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c) => Run(c, LoraApplication.RunTime);

    /// <param name="styleMode">How the case's style LoRAs (if any) are applied: run-time adapters or merged weights.</param>
    public static IReadOnlyDictionary<string, Tensor> Run(GoldenCase c, LoraApplication styleMode)
    {
        var loraEntry = GoldenConsistencyLora.From(c);
        using var model = GoldenFluxModels.LoadTransformer(c);
        using var lora = loraEntry?.Load(model);
        using var styles = GoldenStyleLoras.Attach(c, model, styleMode);
        var schedulerConfig = FlowMatchSchedulerConfig.FromJsonFile(SchedulerConfigPath(c));
        var sampler = new FluxConditionedSampler(model, new FlowMatchEulerScheduler(schedulerConfig), lora);
        var p = c.Params;
        int condSize = p.GetProperty("cond_size").GetInt32();
        var condLatents = c.Input("cond_image_latents");
        if (condLatents.shape[2] != 2 * (condSize / 16) || condLatents.shape[3] != 2 * (condSize / 16))
            throw new InvalidOperationException($"cond_size {condSize} does not match the condition latents [{string.Join(",", condLatents.shape)}]");
        GoldenConsistencyLora.RequireConditionTokens(c, loraEntry, condLatents.shape[2] / 2 * (condLatents.shape[3] / 2));
        GoldenParamChecks.RequireEqual(c, "batch", c.Input("noise").shape[0]);
        GoldenParamChecks.RequireEqual(c, "txt_len", c.Input("prompt_embeds").shape[1]);
        using var capture = new TensorCapture();
        var latents = sampler.Sample(new ConditionedSamplingRequest
        {
            PromptEmbeds = c.Input("prompt_embeds"),
            PooledPromptEmbeds = c.Input("pooled_prompt_embeds"),
            ConditionLatents = condLatents,
            Noise = c.Input("noise"),
            Height = p.GetProperty("height").GetInt32(),
            Width = p.GetProperty("width").GetInt32(),
            Steps = p.GetProperty("num_inference_steps").GetInt32(),
            GuidanceScale = p.GetProperty("guidance_scale").GetDouble(),
            ConsistencyWeight = loraEntry?.Weight ?? 1.0,
        }, capture: capture.Sink);
        var produced = new Dictionary<string, Tensor> { ["latents"] = latents };
        foreach (var (name, t) in capture.Tensors) produced[name] = t.clone();
        return produced;
    }

    /// <summary>
    /// The model folder's scheduler/scheduler_config.json; for a single-file model, the one beside its "model_config"
    /// (models/&lt;name&gt;/transformer/config.json → models/&lt;name&gt;/scheduler/).
    /// </summary>
    public static string SchedulerConfigPath(GoldenCase c)
    {
        var candidates = new List<string> { Path.Combine(c.ModelPath, "scheduler", "scheduler_config.json") };
        if (c.Json.TryGetProperty("model_config", out var cfg) && cfg.ValueKind == System.Text.Json.JsonValueKind.String
            && Path.GetDirectoryName(Path.GetDirectoryName(c.RootPath(cfg.GetString()!))) is { } modelFolder)
            candidates.Add(Path.Combine(modelFolder, "scheduler", "scheduler_config.json"));
        return candidates.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException($"{c.Name}: no scheduler config at {string.Join(" or ", candidates)}");
    }
}
