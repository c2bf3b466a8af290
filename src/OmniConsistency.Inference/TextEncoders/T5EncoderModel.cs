using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Embedding = OmniConsistency.Inference.Nn.Embedding;
using Linear = OmniConsistency.Inference.Nn.Linear;

namespace OmniConsistency.Inference.TextEncoders;

/// <summary>
/// transformers' <c>T5EncoderModel</c> (parameter names = checkpoint keys: <c>shared.weight</c>, <c>encoder.block.{i}...</c>).
/// The encoder's <c>embed_tokens</c> is tied to <c>shared</c> and not registered (the files do not store it).
/// Run without an attention mask, as FLUX does: padding tokens attend and are attended to.
/// </summary>
public sealed class T5EncoderModel : nn.Module<Tensor, Tensor>
{
    public Embedding shared;
    public T5Stack encoder;

    public T5EncoderModel(T5EncoderConfig config, ParameterFactory f) : base(nameof(T5EncoderModel))
    {
        Config = config;
        shared = new Embedding(config.VocabSize, config.DModel, f);
        encoder = new T5Stack(config, f);
        RegisterComponents();
    }

    public T5EncoderConfig Config { get; }

    /// <summary>Builds from <c>folder/config.json</c> and loads <c>folder</c>'s safetensors (single file or sharded index), strictly.</summary>
    public static T5EncoderModel FromPretrained(string folder, ParameterFactory f)
    {
        var model = new T5EncoderModel(T5EncoderConfig.FromFile(Path.Combine(folder, "config.json")), f);
        try
        {
            using var checkpoint = SafetensorsCheckpoint.Open(folder);
            var source = new CheckpointTensorSource(checkpoint);
            // As transformers' T5EncoderModel: a stored copy of the tied embedding and a full T5's decoder are ignored.
            var ignored = source.Keys.Where(k => k == "encoder.embed_tokens.weight" || k.StartsWith("decoder.", StringComparison.Ordinal)
                || k == "lm_head.weight").ToList();
            ModuleWeightLoader.Load(model, source, ignored);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return model;
    }

    /// <param name="inputIds">[B, L] token ids.</param>
    /// <returns>last_hidden_state [B, L, d_model] after the final RMS norm, in the parameter dtype.</returns>
    public override Tensor forward(Tensor inputIds)
    {
        if (inputIds.dim() != 2 || inputIds.shape[1] < 1)
            throw new ArgumentException($"input_ids must be [batch, seq] with seq >= 1, got [{string.Join(",", inputIds.shape)}]", nameof(inputIds));
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var ids = inputIds.to(ScalarType.Int64, shared.weight.device);
        long min = ids.min().item<long>(), max = ids.max().item<long>();
        if (min < 0 || max >= Config.VocabSize)
            throw new ArgumentOutOfRangeException(nameof(inputIds), $"token ids must lie in 0..{Config.VocabSize - 1}, got {min}..{max}");
        return encoder.forward(shared.forward(ids)).MoveToOuterDisposeScope();
    }
}

public sealed class T5Stack : nn.Module<Tensor, Tensor>
{
    public ModuleList<T5Block> block;
    public T5LayerNorm final_layer_norm;

    public T5Stack(T5EncoderConfig c, ParameterFactory f) : base(nameof(T5Stack))
    {
        block = nn.ModuleList(Enumerable.Range(0, c.NumLayers).Select(i => new T5Block(c, f, hasRelativeAttentionBias: i == 0)).ToArray());
        final_layer_norm = new T5LayerNorm(c.DModel, f, c.LayerNormEpsilon);
        RegisterComponents();
    }

    /// <param name="h">Token embeddings [B, L, d_model].</param>
    public override Tensor forward(Tensor h)
    {
        using var scope = NewDisposeScope();
        long length = h.shape[1];
        // Block 0 computes the relative position bias; every block reuses it (transformers passes it along).
        var bias = block[0].SelfAttentionLayer.SelfAttention.ComputeBias(length, length);
        foreach (var b in block) h = b.forward(h, bias);
        return final_layer_norm.forward(h).MoveToOuterDisposeScope();
    }
}

public sealed class T5Block : nn.Module<Tensor, Tensor, Tensor>
{
    // layer.0 = self-attention sublayer, layer.1 = feed-forward sublayer (checkpoint names).
    public ModuleList<nn.Module> layer;

    public T5Block(T5EncoderConfig c, ParameterFactory f, bool hasRelativeAttentionBias) : base(nameof(T5Block))
    {
        layer = nn.ModuleList<nn.Module>(new T5LayerSelfAttention(c, f, hasRelativeAttentionBias), new T5LayerFF(c, f));
        RegisterComponents();
    }

    public T5LayerSelfAttention SelfAttentionLayer => (T5LayerSelfAttention)layer[0];
    private T5LayerFF FeedForwardLayer => (T5LayerFF)layer[1];

    public override Tensor forward(Tensor h, Tensor positionBias)
    {
        using var scope = NewDisposeScope();
        h = ClampFp16(SelfAttentionLayer.forward(h, positionBias));
        h = ClampFp16(FeedForwardLayer.forward(h));
        return h.MoveToOuterDisposeScope();
    }

    // T5Block keeps fp16 activations finite (clamp to finfo.max - 1000 once an inf appears); no-op for fp32/bf16.
    private static Tensor ClampFp16(Tensor h)
    {
        if (h.dtype != ScalarType.Float16) return h;
        const double max = 65504.0;
        double limit = h.isinf().any().item<bool>() ? max - 1000 : max;
        return h.clamp(-limit, limit);
    }
}

public sealed class T5LayerSelfAttention : nn.Module<Tensor, Tensor, Tensor>
{
    public T5Attention SelfAttention;
    public T5LayerNorm layer_norm;

    public T5LayerSelfAttention(T5EncoderConfig c, ParameterFactory f, bool hasRelativeAttentionBias) : base(nameof(T5LayerSelfAttention))
    {
        SelfAttention = new T5Attention(c, f, hasRelativeAttentionBias);
        layer_norm = new T5LayerNorm(c.DModel, f, c.LayerNormEpsilon);
        RegisterComponents();
    }

    public override Tensor forward(Tensor h, Tensor positionBias)
    {
        using var scope = NewDisposeScope();
        return (h + SelfAttention.forward(layer_norm.forward(h), positionBias)).MoveToOuterDisposeScope();
    }
}

/// <summary>T5 self-attention: no bias terms, no 1/√d scaling, additive relative position bias, fp32 softmax.</summary>
public sealed class T5Attention : nn.Module<Tensor, Tensor, Tensor>
{
    public Linear q, k, v, o;
    public Embedding? relative_attention_bias;
    private readonly T5EncoderConfig _c;

    public T5Attention(T5EncoderConfig c, ParameterFactory f, bool hasRelativeAttentionBias) : base(nameof(T5Attention))
    {
        _c = c;
        q = new Linear(c.DModel, c.InnerDim, f, hasBias: false);
        k = new Linear(c.DModel, c.InnerDim, f, hasBias: false);
        v = new Linear(c.DModel, c.InnerDim, f, hasBias: false);
        o = new Linear(c.InnerDim, c.DModel, f, hasBias: false);
        relative_attention_bias = hasRelativeAttentionBias ? new Embedding(c.RelativeAttentionNumBuckets, c.NumHeads, f) : null;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor positionBias)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], s = x.shape[1];
        Tensor Heads(Tensor t) => t.view(b, s, _c.NumHeads, _c.DKv).transpose(1, 2);
        var scores = Heads(q.forward(x)).matmul(Heads(k.forward(x)).transpose(3, 2));
        scores = scores + positionBias;
        var weights = scores.to(ScalarType.Float32).softmax(-1).to(scores.dtype);
        var attn = weights.matmul(Heads(v.forward(x))).transpose(1, 2).contiguous().view(b, s, _c.InnerDim);
        return o.forward(attn).MoveToOuterDisposeScope();
    }

    /// <summary>Bias [1, heads, queries, keys] from the bucketed relative positions (key − query), bidirectional.</summary>
    public Tensor ComputeBias(long queryLength, long keyLength)
    {
        if (relative_attention_bias is null) throw new InvalidOperationException("only the first T5 block holds the relative attention bias");
        using var scope = NewDisposeScope();
        var device = relative_attention_bias.weight.device;
        var context = arange(queryLength, ScalarType.Int64, device).unsqueeze(1);
        var memory = arange(keyLength, ScalarType.Int64, device).unsqueeze(0);
        var buckets = RelativePositionBucket(memory - context, _c.RelativeAttentionNumBuckets, _c.RelativeAttentionMaxDistance);
        var values = relative_attention_bias.forward(buckets); // [q, k, heads]
        return values.permute(2, 0, 1).unsqueeze(0).MoveToOuterDisposeScope();
    }

    /// <summary>transformers' <c>_relative_position_bucket</c> (bidirectional), with the same fp32 log and truncation.</summary>
    public static Tensor RelativePositionBucket(Tensor relativePosition, int numBuckets, int maxDistance)
    {
        using var scope = NewDisposeScope();
        numBuckets /= 2;
        var buckets = relativePosition.gt(0).to(ScalarType.Int64) * numBuckets;
        var n = relativePosition.abs();
        int maxExact = numBuckets / 2;
        var isSmall = n.lt(maxExact);
        var large = (n.to(ScalarType.Float32) / maxExact).log() / Math.Log((double)maxDistance / maxExact) * (numBuckets - maxExact);
        var ifLarge = large.to(ScalarType.Int64) + maxExact;
        ifLarge = ifLarge.clamp_max(numBuckets - 1);
        return (buckets + where(isSmall, n, ifLarge)).MoveToOuterDisposeScope();
    }
}

public sealed class T5LayerFF : nn.Module<Tensor, Tensor>
{
    public nn.Module<Tensor, Tensor> DenseReluDense;
    public T5LayerNorm layer_norm;

    public T5LayerFF(T5EncoderConfig c, ParameterFactory f) : base(nameof(T5LayerFF))
    {
        DenseReluDense = c.IsGatedAct ? new T5DenseGatedActDense(c, f) : new T5DenseActDense(c, f);
        layer_norm = new T5LayerNorm(c.DModel, f, c.LayerNormEpsilon);
        RegisterComponents();
    }

    public override Tensor forward(Tensor h)
    {
        using var scope = NewDisposeScope();
        return (h + DenseReluDense.forward(layer_norm.forward(h))).MoveToOuterDisposeScope();
    }
}

/// <summary>wo(act(wi_0 x) ⊙ wi_1 x) (gated-gelu: act = gelu_new, op by op in the tensor dtype).</summary>
public sealed class T5DenseGatedActDense : nn.Module<Tensor, Tensor>
{
    public Linear wi_0, wi_1, wo;
    private readonly Func<Tensor, Tensor> _act;

    public T5DenseGatedActDense(T5EncoderConfig c, ParameterFactory f) : base(nameof(T5DenseGatedActDense))
    {
        wi_0 = new Linear(c.DModel, c.DFf, f, hasBias: false);
        wi_1 = new Linear(c.DModel, c.DFf, f, hasBias: false);
        wo = new Linear(c.DFf, c.DModel, f, hasBias: false);
        _act = Activations.Get(c.DenseActFn);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = _act(wi_0.forward(x)) * wi_1.forward(x);
        return wo.forward(h.to(wo.weight.dtype)).MoveToOuterDisposeScope();
    }
}

/// <summary>wo(act(wi x)) (feed_forward_proj "relu" and other non-gated activations).</summary>
public sealed class T5DenseActDense : nn.Module<Tensor, Tensor>
{
    public Linear wi, wo;
    private readonly Func<Tensor, Tensor> _act;

    public T5DenseActDense(T5EncoderConfig c, ParameterFactory f) : base(nameof(T5DenseActDense))
    {
        wi = new Linear(c.DModel, c.DFf, f, hasBias: false);
        wo = new Linear(c.DFf, c.DModel, f, hasBias: false);
        _act = Activations.Get(c.DenseActFn);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return wo.forward(_act(wi.forward(x)).to(wo.weight.dtype)).MoveToOuterDisposeScope();
    }
}

/// <summary>T5's RMS norm: statistics in fp32, the normalised value cast to a half weight dtype, then × weight.</summary>
public sealed class T5LayerNorm : nn.Module<Tensor, Tensor>
{
    public Parameter weight;
    private readonly double _eps;

    public T5LayerNorm(long dim, ParameterFactory f, double eps) : base(nameof(T5LayerNorm))
    {
        weight = f.Create(dim);
        _eps = eps;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var variance = x.to(ScalarType.Float32).pow(2).mean([-1], keepdim: true);
        var y = x * (variance + _eps).rsqrt();
        if (weight.dtype is ScalarType.Float16 or ScalarType.BFloat16) y = y.to(weight.dtype);
        return (weight * y).MoveToOuterDisposeScope();
    }
}
