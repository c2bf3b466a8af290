using OmniConsistency.Inference.Consistency;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Pipelines;

/// <summary>
/// Plain FLUX text-to-image (diffusers' FluxPipeline without OmniConsistency's condition branch): encode the prompt,
/// draw the noise, denoise with the flow-matching Euler schedule, decode. It is the conditioned sampler with an empty
/// bank: no warm-up and no condition K/V, so every transformer call is a stock FLUX forward. Progress is reported per
/// step and cancellation honoured between steps; every tensor lives in dispose scopes.
/// </summary>
/// <param name="promptCache">Where prompt embeddings are looked up and kept; null: encoded for each call.</param>
public sealed class FluxTextToImagePipeline(FluxModelSet models, PromptEmbeddingCache? promptCache = null)
{
    public FluxModelSet Models { get; } = models;
    public PromptEmbeddingCache? PromptCache { get; } = promptCache;

    /// <param name="capture">Receives prompt_embeds, pooled_prompt_embeds, text_ids, noise_packed, latent_image_ids,
    /// timesteps, sigmas, noise_pred_step{i}, latents_step{i}, latents, latents_unpacked and image.</param>
    public FluxGenerationOutput Run(FluxGenerationInputs inputs, GenerationNoise noise, Action<StylizationProgress>? progress = null,
        CancellationToken cancellationToken = default, Action<string, Tensor>? capture = null)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(noise);
        FluxPipelineStages.CheckSize(inputs);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var promptLease = FluxPipelineStages.EncodePrompt(Models, PromptCache, inputs, progress, cancellationToken, capture);
        var prompt = promptLease.Prompt;
        var initialNoise = FluxPipelineStages.DrawNoise(Models, inputs, noise);
        var sampler = new FluxConditionedSampler(Models.Transformer, Models.Scheduler, consistencyLora: null);
        progress?.Invoke(new StylizationProgress(GenerationPhases.Denoising, 0, inputs.Steps));
        var latents = sampler.Sample(new ConditionedSamplingRequest
        {
            PromptEmbeds = prompt.PromptEmbeds,
            PooledPromptEmbeds = prompt.PooledPromptEmbeds,
            Noise = initialNoise,
            Height = inputs.Height,
            Width = inputs.Width,
            Steps = inputs.Steps,
            GuidanceScale = inputs.GuidanceScale,
        }, step => progress?.Invoke(new StylizationProgress(GenerationPhases.Denoising, step, inputs.Steps)), cancellationToken, capture);
        var image = FluxPipelineStages.Decode(Models, inputs, latents, progress, cancellationToken, capture);
        return new FluxGenerationOutput(image.MoveToOuterDisposeScope(), prompt.ClipTokens[0], prompt.T5Tokens[0]);
    }
}
