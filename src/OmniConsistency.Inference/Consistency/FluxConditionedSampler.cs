using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.Sampling;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Consistency;

/// <summary>One conditioned denoising run, from encoded prompt, condition latents and initial noise to latents.</summary>
public sealed record ConditionedSamplingRequest
{
    /// <summary>T5 prompt embeddings [B, T, joint_attention_dim].</summary>
    public required Tensor PromptEmbeds { get; init; }
    /// <summary>CLIP pooled embedding [B, pooled_projection_dim].</summary>
    public required Tensor PooledPromptEmbeds { get; init; }
    /// <summary>
    /// Unpacked condition latents [1 or B, c, hc, wc] (VAE latents, already shifted and scaled); hc = 2·(cond_size/16).
    /// Null runs plain FLUX text-to-image: no warm-up and no condition K/V (the sampler with an empty bank).
    /// </summary>
    public Tensor? ConditionLatents { get; init; }
    /// <summary>Unpacked initial noise [B, c, h, w] with h = 2·(Height/16), w = 2·(Width/16).</summary>
    public required Tensor Noise { get; init; }
    /// <summary>Output size in pixels (the latent grid floors to multiples of 16).</summary>
    public required int Height { get; init; }
    public required int Width { get; init; }
    public int Steps { get; init; } = 25;
    public double GuidanceScale { get; init; } = 3.5;
    /// <summary>The consistency LoRA multiplier w (upstream lora_weights[0]).</summary>
    public double ConsistencyWeight { get; init; } = 1.0;
    /// <summary>
    /// Run the warm-up without the text tokens (spec §8.8): the bank is the same up to float rounding (condition rows
    /// never attend to text) and the pass is cheaper. False (default) keeps upstream's form for bit-level parity.
    /// </summary>
    public bool TextFreeWarmup { get; init; }
}

/// <summary>
/// OmniConsistency's denoising loop on a FLUX transformer (the latent part of the upstream FluxPipeline.__call__):
/// pack noise and condition latents, build [noise ids; condition ids], schedule with mu from the noise-token count,
/// one warm-up pass that fills a <see cref="ConditionKvBank"/>, then per step a transformer call with the bank and an
/// Euler update. The bank belongs to the call and is disposed when it ends, however it ends. Unlike upstream, batches
/// above 1 work (a batch-1 condition is shared by all samples).
/// The model, LoRA and scheduler are only read, so one sampler may serve concurrent generations.
/// </summary>
public sealed class FluxConditionedSampler(FluxTransformer2DModel model, FlowMatchEulerScheduler scheduler, ConsistencyLora? consistencyLora)
{
    public FluxTransformer2DModel Model { get; } = model;

    /// <summary>
    /// Runs the loop; returns the final packed latents [B, N, c·4] in the model dtype (in the caller's dispose scope).
    /// <paramref name="onStepCompleted"/> gets the 1-based step number; <paramref name="cancellationToken"/> is checked
    /// before the warm-up and before every step; <paramref name="onWarmupCompleted"/> is called after the warm-up.
    /// <paramref name="capture"/> receives "noise_packed", "cond_latents_packed", "latent_image_ids", "timesteps",
    /// "sigmas", "transformer_out_warmup", "noise_pred_step{i}" and "latents_step{i}" (no condition entries without a
    /// condition).
    /// </summary>
    public Tensor Sample(ConditionedSamplingRequest request, Action<int>? onStepCompleted = null,
        CancellationToken cancellationToken = default, Action<string, Tensor>? capture = null, Action? onWarmupCompleted = null)
    {
        var config = Model.Config;
        var dtype = Model.DType;
        var device = Model.Device;
        long channels = config.InChannels / 4;
        long h = 2 * (request.Height / 16), w = 2 * (request.Width / 16);
        Validate(request, channels, h, w);
        long batch = request.Noise.shape[0];

        using var scope = NewDisposeScope();
        using var _ = no_grad();
        cancellationToken.ThrowIfCancellationRequested();
        var latents = FluxLatents.Pack(request.Noise.to(dtype, device));
        var noiseIds = FluxLatents.ImageIds(h, w, dtype, device);
        var schedule = scheduler.CreateSchedule(request.Steps, latents.shape[1]);
        var prompt = request.PromptEmbeds.to(dtype, device);
        var pooled = request.PooledPromptEmbeds.to(dtype, device);
        var textIds = zeros([prompt.shape[1], config.AxesDimsRope.Count], dtype, device);
        var guidance = config.GuidanceEmbeds ? full([batch], (float)request.GuidanceScale, ScalarType.Float32, device) : null;
        capture?.Invoke("noise_packed", latents);
        capture?.Invoke("timesteps", tensor(schedule.Timesteps));
        capture?.Invoke("sigmas", tensor(schedule.Sigmas));

        ConditionKvBank? bank = null;
        try
        {
            if (request.ConditionLatents is { } conditionLatents)
            {
                var condition = FluxLatents.Pack(conditionLatents.to(dtype, device));
                if (condition.shape[0] != batch) condition = condition.expand(batch, -1, -1);
                var conditionIds = ConditionPositionIds.Create(conditionLatents.shape[2], conditionLatents.shape[3], h, w, dtype, device);
                capture?.Invoke("cond_latents_packed", condition);
                capture?.Invoke("latent_image_ids", cat([noiseIds, conditionIds], 0));
                var warmupInputs = request.TextFreeWarmup
                    ? new ConditionWarmupInputs(condition, conditionIds, prompt.narrow(1, 0, 0), pooled, guidance, textIds.narrow(0, 0, 0))
                    : new ConditionWarmupInputs(condition, conditionIds, prompt, pooled, guidance, textIds);
                var warmup = ConditionBranch.Warmup(Model, consistencyLora, warmupInputs, request.ConsistencyWeight);
                bank = warmup.Bank;
                capture?.Invoke("transformer_out_warmup", warmup.Output);
                warmup.Output.Dispose();
                onWarmupCompleted?.Invoke();
            }
            else
            {
                capture?.Invoke("latent_image_ids", noiseIds);
            }
            return Denoise(schedule, latents, prompt, pooled, guidance, noiseIds, textIds, bank, onStepCompleted, cancellationToken, capture)
                .MoveToOuterDisposeScope();
        }
        finally
        {
            bank?.Dispose();
        }
    }

    private Tensor Denoise(FlowMatchSchedule schedule, Tensor latents, Tensor prompt, Tensor pooled, Tensor? guidance, Tensor noiseIds, Tensor textIds,
        ConditionKvBank? bank, Action<int>? onStepCompleted, CancellationToken cancellationToken, Action<string, Tensor>? capture)
    {
        long batch = latents.shape[0];
        var device = latents.device;
        var context = new FluxForwardContext { Attention = bank };
        for (int i = 0; i < schedule.Steps; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var stepScope = NewDisposeScope();
            // As upstream: t in the latents' dtype, divided by 1000 in that dtype (the model multiplies back).
            var timestep = full([batch], schedule.Timesteps[i], ScalarType.Float32, device).to(latents.dtype) / 1000;
            var noisePred = Model.Forward(new FluxTransformerInputs(latents, prompt, pooled, timestep, guidance, noiseIds, textIds), context);
            var next = scheduler.Step(schedule, i, noisePred, latents);
            capture?.Invoke($"noise_pred_step{i}", noisePred);
            capture?.Invoke($"latents_step{i}", next);
            var previous = latents;
            latents = next.MoveToOuterDisposeScope();
            previous.Dispose();
            onStepCompleted?.Invoke(i + 1);
        }
        return latents;
    }

    private static void Validate(ConditionedSamplingRequest r, long channels, long h, long w)
    {
        static string S(Tensor t) => $"[{string.Join(",", t.shape)}]";
        if (r.Height < 16 || r.Width < 16) throw new ArgumentException($"Output size {r.Width}×{r.Height} is below 16 pixels.");
        if (r.Steps < 1) throw new ArgumentException($"Steps must be at least 1, got {r.Steps}.");
        if (r.Noise.ndim != 4 || r.Noise.shape[1] != channels || r.Noise.shape[2] != h || r.Noise.shape[3] != w)
            throw new ArgumentException($"Noise must be [B, {channels}, {h}, {w}] for {r.Width}×{r.Height}, got {S(r.Noise)}.");
        long batch = r.Noise.shape[0];
        var c = r.ConditionLatents;
        if (c is not null && (c.ndim != 4 || c.shape[1] != channels || c.shape[2] < 2 || c.shape[3] < 2 || c.shape[2] % 2 != 0 || c.shape[3] % 2 != 0
            || (c.shape[0] != 1 && c.shape[0] != batch)))
            throw new ArgumentException($"Condition latents must be [1 or {batch}, {channels}, hc, wc] with even hc, wc, got {S(c!)}.");
        if (r.PromptEmbeds.ndim != 3 || r.PromptEmbeds.shape[0] != batch)
            throw new ArgumentException($"Prompt embeddings must be [{batch}, T, D], got {S(r.PromptEmbeds)}.");
        if (r.PooledPromptEmbeds.ndim != 2 || r.PooledPromptEmbeds.shape[0] != batch)
            throw new ArgumentException($"Pooled prompt embeddings must be [{batch}, D], got {S(r.PooledPromptEmbeds)}.");
    }
}
