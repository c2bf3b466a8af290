using OmniConsistency.Inference.Nn;
using TorchSharp;
using TorchSharp.Modules;
using Linear = OmniConsistency.Inference.Nn.Linear;
using Identity = OmniConsistency.Inference.Nn.Identity;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Flux;

/// <summary>Inputs of one transformer forward (diffusers FluxTransformer2DModel.forward).</summary>
/// <param name="HiddenStates">Packed latents [B, N, in_channels].</param>
/// <param name="EncoderHiddenStates">T5 prompt embeddings [B, T, joint_attention_dim].</param>
/// <param name="PooledProjections">CLIP pooled embedding [B, pooled_projection_dim].</param>
/// <param name="Timestep">[B] (or [1]/scalar for all): scheduler timestep divided by 1000; the model multiplies by 1000 in its dtype.</param>
/// <param name="Guidance">[B] (or [1]/scalar) raw guidance scale; null for models without guidance embeds.</param>
/// <param name="ImageIds">[N, axes] position ids of the image tokens.</param>
/// <param name="TextIds">[T, axes] position ids of the text tokens (zeros in FLUX).</param>
public sealed record FluxTransformerInputs(
    Tensor HiddenStates,
    Tensor EncoderHiddenStates,
    Tensor PooledProjections,
    Tensor Timestep,
    Tensor? Guidance,
    Tensor ImageIds,
    Tensor TextIds);

/// <summary>
/// The FLUX transformer in diffusers layout (parameter names = diffusers checkpoint keys), built from a
/// <see cref="FluxTransformerConfig"/> of any size. Stateless between calls: per-call additions travel in a
/// <see cref="FluxForwardContext"/>.
/// </summary>
public sealed class FluxTransformer2DModel : nn.Module
{
    public Linear x_embedder;
    public Linear context_embedder;
    public FluxTimeTextEmbedding time_text_embed;
    public ModuleList<FluxTransformerBlock> transformer_blocks;
    public ModuleList<FluxSingleTransformerBlock> single_transformer_blocks;
    public AdaLayerNormContinuous norm_out;
    public Linear proj_out;

    public FluxTransformer2DModel(FluxTransformerConfig config, ParameterFactory factory) : base(nameof(FluxTransformer2DModel))
    {
        config.Validate();
        Config = config;
        DType = factory.DType;
        Device = factory.Device;
        long dim = config.InnerDim;
        x_embedder = new Linear(config.InChannels, dim, factory);
        context_embedder = new Linear(config.JointAttentionDim, dim, factory);
        time_text_embed = new FluxTimeTextEmbedding(config, factory);
        transformer_blocks = nn.ModuleList(Enumerable.Range(0, config.NumLayers).Select(_ => new FluxTransformerBlock(config, factory)).ToArray());
        single_transformer_blocks = nn.ModuleList(Enumerable.Range(0, config.NumSingleLayers).Select(_ => new FluxSingleTransformerBlock(config, factory)).ToArray());
        norm_out = new AdaLayerNormContinuous(dim, factory);
        proj_out = new Linear(dim, (long)config.PatchSize * config.PatchSize * config.OutChannels, factory);
        RegisterComponents();
        // The model owns its weights: built inside a caller's dispose scope they must outlive it.
        foreach (var p in parameters()) p.DetachFromDisposeScope();
    }

    public FluxTransformerConfig Config { get; }
    public ScalarType DType { get; }
    public Device Device { get; }

    /// <summary>The diffusers attention-processor name of attention layer <paramref name="layer"/> (see <see cref="IFluxAttentionExtension"/>).</summary>
    public string AttentionProcessorName(int layer) => Config.AttentionProcessorName(layer);

    /// <summary>RoPE tables for ids [S, axes] with this model's axes and θ.</summary>
    public RotaryTable RotaryTable(Tensor ids) => FluxRotaryEmbedding.Table(ids, Config.AxesDimsRope, Config.RopeTheta);

    /// <summary>The conditioning vector temb [B, D] (model dtype) for timestep (÷1000), guidance (raw) and pooled embedding.</summary>
    public Tensor TimeTextEmbedding(Tensor timestep, Tensor? guidance, Tensor pooled)
    {
        using var scope = NewDisposeScope();
        long batch = pooled.shape[0];
        var t = Batched(timestep, batch, "timestep").to(DType, Device) * 1000;
        var g = guidance is null ? null : Batched(guidance, batch, "guidance").to(DType, Device) * 1000;
        return time_text_embed.Forward(t, g, pooled.to(DType, Device)).MoveToOuterDisposeScope();
    }

    /// <summary>Predicted velocity [B, N, out_channels·patch²] in the model dtype.</summary>
    public Tensor Forward(FluxTransformerInputs inputs, FluxForwardContext? context = null)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (hidden, text, pooled, imageIds, textIds) = Validate(inputs);
        var capture = context?.Capture;
        var extension = context?.Attention;

        var image = x_embedder.forward(hidden);
        var temb = TimeTextEmbedding(inputs.Timestep, inputs.Guidance, pooled);
        capture?.Invoke("temb", temb);
        var txt = context_embedder.forward(text);
        var rope = RotaryTable(cat([textIds, imageIds], 0));
        capture?.Invoke("rope_cos", rope.Cos);
        capture?.Invoke("rope_sin", rope.Sin);

        int layer = 0;
        for (int i = 0; i < transformer_blocks.Count; i++, layer++)
        {
            (image, txt) = transformer_blocks[i].Forward(image, txt, temb, rope, layer, extension);
            capture?.Invoke($"transformer_blocks.{i}.encoder_hidden_states", txt);
            capture?.Invoke($"transformer_blocks.{i}.hidden_states", image);
        }
        long t = txt.shape[1];
        var sequence = cat([txt, image], 1);
        for (int i = 0; i < single_transformer_blocks.Count; i++, layer++)
        {
            sequence = single_transformer_blocks[i].Forward(sequence, t, temb, rope, layer, extension);
            capture?.Invoke($"single_transformer_blocks.{i}.hidden_states", sequence);
        }
        image = sequence.narrow(1, t, sequence.shape[1] - t);
        return proj_out.forward(norm_out.Forward(image, temb)).MoveToOuterDisposeScope();
    }

    private (Tensor Hidden, Tensor Text, Tensor Pooled, Tensor ImageIds, Tensor TextIds) Validate(FluxTransformerInputs inputs)
    {
        static string S(Tensor t) => $"[{string.Join(",", t.shape)}]";
        var c = Config;
        var h = inputs.HiddenStates;
        if (h.ndim != 3 || h.shape[2] != c.InChannels)
            throw new ArgumentException($"hidden_states must be [B, N, {c.InChannels}], got {S(h)}.");
        long batch = h.shape[0], n = h.shape[1];
        var e = inputs.EncoderHiddenStates;
        if (e.ndim != 3 || e.shape[0] != batch || e.shape[2] != c.JointAttentionDim)
            throw new ArgumentException($"encoder_hidden_states must be [{batch}, T, {c.JointAttentionDim}], got {S(e)}.");
        var p = inputs.PooledProjections;
        if (p.ndim != 2 || p.shape[0] != batch || p.shape[1] != c.PooledProjectionDim)
            throw new ArgumentException($"pooled_projections must be [{batch}, {c.PooledProjectionDim}], got {S(p)}.");
        var imageIds = Ids(inputs.ImageIds, n, "img_ids");
        var textIds = Ids(inputs.TextIds, e.shape[1], "txt_ids");
        return (h.to(DType, Device), e.to(DType, Device), p, imageIds, textIds);
    }

    private Tensor Ids(Tensor ids, long rows, string name)
    {
        // diffusers accepts (deprecated) 3-D ids and uses the first batch entry.
        if (ids.ndim == 3) ids = ids[0];
        if (ids.ndim != 2 || ids.shape[0] != rows || ids.shape[1] != Config.AxesDimsRope.Count)
            throw new ArgumentException($"{name} must be [{rows}, {Config.AxesDimsRope.Count}], got [{string.Join(",", ids.shape)}].");
        return ids.to(Device);
    }

    private static Tensor Batched(Tensor values, long batch, string name)
    {
        var flat = values.reshape(-1);
        if (flat.shape[0] == batch) return flat;
        if (flat.shape[0] == 1) return flat.expand(batch);
        throw new ArgumentException($"{name} must have one value or one per sample ({batch}), got [{string.Join(",", values.shape)}].");
    }
}
