using OmniConsistency.Inference.Consistency;
using OmniConsistency.Inference.Imaging;
using OmniConsistency.Inference.Sampling;
using OmniConsistency.Inference.TextEncoders;
using OmniConsistency.Inference.Vae;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Pipelines;

/// <summary>
/// OmniConsistency's FluxPipeline.__call__ end to end on one <see cref="FluxModelSet"/> (spec §10): encode the prompt
/// (CLIP pooled, T5 hidden states), draw the noise, VAE-encode the condition image and SAMPLE its posterior with the
/// second draw, shift/scale and pack it, warm up the condition branch (a K/V bank owned by this call), denoise, unpack,
/// VAE-decode and map to [0, 1]. Style LoRAs are not this class's business: attach them to the model set's modules
/// around the call (they then also act on the condition tokens in the warm-up, as upstream, quirk Q20).
/// Every tensor lives in dispose scopes; the call leaves nothing behind but its output (and, with
/// <paramref name="promptCache"/>, the prompt embeddings that cache keeps).
/// </summary>
/// <param name="promptCache">Where prompt embeddings are looked up and kept; null: encoded for each call.</param>
public sealed class OmniConsistencyPipeline(FluxModelSet models, PromptEmbeddingCache? promptCache = null)
{
    public FluxModelSet Models { get; } = models;
    public PromptEmbeddingCache? PromptCache { get; } = promptCache;

    /// <param name="noise">The generation's random draws (seeded, or given tensors).</param>
    /// <param name="progress">Phase changes and one report per denoising step.</param>
    /// <param name="cancellationToken">Checked between stages and before every denoising step.</param>
    /// <param name="capture">Receives the pipeline_e2e intermediates: prompt_embeds, pooled_prompt_embeds, text_ids,
    /// condition_image, cond_latents (packed), noise_packed, latent_image_ids, timesteps, sigmas, latents_step{i},
    /// latents, latents_unpacked, image (and the sampler's transformer_out_warmup, noise_pred_step{i}).</param>
    public FluxGenerationOutput Run(OmniConsistencyInputs inputs, GenerationNoise noise, Action<StylizationProgress>? progress = null,
        CancellationToken cancellationToken = default, Action<string, Tensor>? capture = null)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(noise);
        var condition = inputs.ConditionImage;
        if (condition.ndim != 4 || condition.shape[0] != 1 || condition.shape[1] != 3 || condition.shape[2] != condition.shape[3]
            || condition.shape[2] < 16 || condition.shape[2] % 16 != 0)
            throw new ArgumentException($"The condition image must be [1, 3, S, S] with S a multiple of 16, got [{string.Join(",", condition.shape)}].");
        FluxPipelineStages.CheckSize(inputs);

        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var vae = Models.Vae;
        using var promptLease = FluxPipelineStages.EncodePrompt(Models, PromptCache, inputs, progress, cancellationToken, capture);
        var prompt = promptLease.Prompt;

        cancellationToken.ThrowIfCancellationRequested();
        progress?.Invoke(new StylizationProgress(GenerationPhases.EncodingCondition, 0, inputs.Steps));
        capture?.Invoke("condition_image", condition);
        using var posterior = vae.Encode(condition);
        // Draw order as upstream's prepare_latents: the noise first, then the posterior sample with the same generator.
        var initialNoise = FluxPipelineStages.DrawNoise(Models, inputs, noise);
        var eps = noise.ConditionEps(posterior.Mean.shape, posterior.Mean.dtype, posterior.Mean.device);
        var conditionLatents = vae.ToModelSpace(posterior.Sample(eps));
        capture?.Invoke("cond_latents", FluxLatents.Pack(conditionLatents));

        var sampler = new FluxConditionedSampler(Models.Transformer, Models.Scheduler, Models.ConsistencyLora);
        progress?.Invoke(new StylizationProgress(GenerationPhases.Warmup, 0, inputs.Steps));
        var latents = sampler.Sample(new ConditionedSamplingRequest
        {
            PromptEmbeds = prompt.PromptEmbeds,
            PooledPromptEmbeds = prompt.PooledPromptEmbeds,
            ConditionLatents = conditionLatents,
            Noise = initialNoise,
            Height = inputs.Height,
            Width = inputs.Width,
            Steps = inputs.Steps,
            GuidanceScale = inputs.GuidanceScale,
            ConsistencyWeight = inputs.ConsistencyWeight,
            TextFreeWarmup = inputs.TextFreeWarmup,
        }, step => progress?.Invoke(new StylizationProgress(GenerationPhases.Denoising, step, inputs.Steps)), cancellationToken, capture,
            onWarmupCompleted: () => progress?.Invoke(new StylizationProgress(GenerationPhases.Denoising, 0, inputs.Steps)));

        var image = FluxPipelineStages.Decode(Models, inputs, latents, progress, cancellationToken, capture);
        return new FluxGenerationOutput(image.MoveToOuterDisposeScope(), prompt.ClipTokens[0], prompt.T5Tokens[0]);
    }
}

/// <summary>The stages the OmniConsistency and plain text-to-image pipelines share.</summary>
internal static class FluxPipelineStages
{
    public static void CheckSize(FluxGenerationInputs inputs)
    {
        if (inputs.Height < 16 || inputs.Width < 16)
            throw new ArgumentException($"Output size {inputs.Width}×{inputs.Height} is below one 16-pixel latent patch.");
        if (inputs.Steps < 1) throw new ArgumentException($"Steps must be at least 1, got {inputs.Steps}.");
        if (!double.IsFinite(inputs.GuidanceScale)) throw new ArgumentException($"Guidance must be finite, got {inputs.GuidanceScale}.");
    }

    /// <summary>
    /// CLIP + T5 on the inputs' prompts, outputs in the transformer's dtype and device (the text encoders may live
    /// elsewhere), from <paramref name="cache"/> when given (uncached otherwise: the same computation, so the results are
    /// bit-identical either way). Dispose the lease when the generation ends.
    /// </summary>
    public static PromptEmbeddingLease EncodePrompt(FluxModelSet models, PromptEmbeddingCache? cache, FluxGenerationInputs inputs,
        Action<StylizationProgress>? progress, CancellationToken cancellationToken, Action<string, Tensor>? capture)
    {
        cancellationToken.ThrowIfCancellationRequested();
        progress?.Invoke(new StylizationProgress(GenerationPhases.EncodingPrompt, 0, inputs.Steps));
        cache ??= Uncached;
        var lease = cache.Acquire(models.PromptEncoder, inputs.Prompt, inputs.Prompt2, inputs.MaxSequenceLength, models.DType, models.Device,
            inputs.TextEncoderState, cancellationToken);
        try
        {
            capture?.Invoke("prompt_embeds", lease.Prompt.PromptEmbeds);
            capture?.Invoke("pooled_prompt_embeds", lease.Prompt.PooledPromptEmbeds);
            capture?.Invoke("text_ids", lease.Prompt.TextIds);
        }
        catch
        {
            // The caller never gets the lease: release it here, or the entry's tensors outlive the cache.
            lease.Dispose();
            throw;
        }
        return lease;
    }

    /// <summary>A disabled cache: encodes every time, keeps nothing (holds no tensors, so it is never disposed).</summary>
    private static readonly PromptEmbeddingCache Uncached = new(0);

    /// <summary>randn [1, c, 2⌊H/16⌋, 2⌊W/16⌋] in the transformer's dtype (the reference draws in prompt_embeds' dtype, the model dtype).</summary>
    public static Tensor DrawNoise(FluxModelSet models, FluxGenerationInputs inputs, GenerationNoise noise)
    {
        var (h, w) = LatentPacking.LatentSize(inputs.Height, inputs.Width);
        long channels = models.Transformer.Config.InChannels / 4;
        return noise.InitialNoise([1, channels, h, w], models.DType, models.Device);
    }

    /// <summary>Packed latents → unpack → /scale + shift → VAE decode → clamp(x/2 + 0.5, 0, 1), as float32 on the CPU.</summary>
    public static Tensor Decode(FluxModelSet models, FluxGenerationInputs inputs, Tensor latents, Action<StylizationProgress>? progress,
        CancellationToken cancellationToken, Action<string, Tensor>? capture)
    {
        cancellationToken.ThrowIfCancellationRequested();
        progress?.Invoke(new StylizationProgress(GenerationPhases.Decoding, inputs.Steps, inputs.Steps));
        using var scope = NewDisposeScope();
        capture?.Invoke("latents", latents);
        var (h, w) = LatentPacking.LatentSize(inputs.Height, inputs.Width);
        var unpacked = FluxLatents.Unpack(latents, h, w);
        capture?.Invoke("latents_unpacked", unpacked);
        var decoded = models.Vae.Decode(models.Vae.FromModelSpace(unpacked));
        var image = ImageTensors.Denormalize(decoded).to(ScalarType.Float32).cpu();
        capture?.Invoke("image", image);
        return image.MoveToOuterDisposeScope();
    }
}
