using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using TorchSharp;
using TorchSharp.Modules;
using Embedding = OmniConsistency.Inference.Nn.Embedding;
using LayerNorm = OmniConsistency.Inference.Nn.LayerNorm;
using Linear = OmniConsistency.Inference.Nn.Linear;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace OmniConsistency.Inference.TextEncoders;

/// <summary>CLIP text tower output: the final-layer-normed hidden states and the pooled row per sequence.</summary>
public sealed record ClipTextOutput(Tensor LastHiddenState, Tensor PooledOutput) : IDisposable
{
    public void Dispose()
    {
        LastHiddenState.Dispose();
        PooledOutput.Dispose();
    }
}

/// <summary>
/// transformers' <c>CLIPTextModel</c> (parameter names <c>text_model.*</c> = checkpoint keys). FLUX uses its pooled output.
/// No padding mask (FLUX passes none); causal self-attention.
/// </summary>
public sealed class ClipTextModel : nn.Module<Tensor, ClipTextOutput>
{
    public ClipTextTransformer text_model;

    public ClipTextModel(ClipTextConfig config, ParameterFactory f) : base(nameof(ClipTextModel))
    {
        Config = config;
        text_model = new ClipTextTransformer(config, f);
        RegisterComponents();
    }

    public ClipTextConfig Config { get; }

    /// <summary>Builds from <c>folder/config.json</c> and loads <c>folder</c>'s safetensors (single file or sharded index), strictly.</summary>
    public static ClipTextModel FromPretrained(string folder, ParameterFactory f)
    {
        var model = new ClipTextModel(ClipTextConfig.FromFile(Path.Combine(folder, "config.json")), f);
        try
        {
            using var checkpoint = SafetensorsCheckpoint.Open(folder);
            // position_ids is a non-persistent buffer that older checkpoints still carry.
            ModuleWeightLoader.Load(model, new CheckpointTensorSource(checkpoint), ["text_model.embeddings.position_ids"]);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return model;
    }

    /// <param name="inputIds">[B, S] token ids, S ≤ max_position_embeddings.</param>
    public override ClipTextOutput forward(Tensor inputIds)
    {
        if (inputIds.dim() != 2) throw new ArgumentException($"input_ids must be [batch, seq], got [{string.Join(",", inputIds.shape)}]", nameof(inputIds));
        long seq = inputIds.shape[1];
        if (seq < 1 || seq > Config.MaxPositionEmbeddings)
            throw new ArgumentException($"sequence length {seq} is outside 1..{Config.MaxPositionEmbeddings} (max_position_embeddings)", nameof(inputIds));
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var device = text_model.embeddings.token_embedding.weight.device;
        var ids = inputIds.to(ScalarType.Int64, device);
        ValidateIds(ids);
        var last = text_model.forward(ids);

        // transformers: with the legacy eos_token_id == 2 the pooled row is argmax(input_ids) (the first highest id,
        // i.e. the first <|endoftext|>); otherwise the first position holding eos_token_id.
        var rows = Config.EosTokenId == 2 || Config.EosTokenId is null
            ? ids.to(ScalarType.Int32).argmax(-1)
            : ids.to(ScalarType.Int32).eq(Config.EosTokenId.Value).to(ScalarType.Int32).argmax(-1);
        var pooled = last[arange(last.shape[0], device: device), rows];
        return new ClipTextOutput(last.MoveToOuterDisposeScope(), pooled.MoveToOuterDisposeScope());
    }

    private void ValidateIds(Tensor ids)
    {
        if (ids.NumberOfElements == 0) return;
        long min = ids.min().item<long>(), max = ids.max().item<long>();
        if (min < 0 || max >= Config.VocabSize)
            throw new ArgumentOutOfRangeException(nameof(ids), $"token ids must lie in 0..{Config.VocabSize - 1}, got {min}..{max}");
    }
}

public sealed class ClipTextTransformer : nn.Module<Tensor, Tensor>
{
    public ClipTextEmbeddings embeddings;
    public ClipEncoder encoder;
    public LayerNorm final_layer_norm;

    public ClipTextTransformer(ClipTextConfig c, ParameterFactory f) : base(nameof(ClipTextTransformer))
    {
        embeddings = new ClipTextEmbeddings(c, f);
        encoder = new ClipEncoder(c, f);
        final_layer_norm = new LayerNorm(c.HiddenSize, f, c.LayerNormEps);
        RegisterComponents();
    }

    public override Tensor forward(Tensor ids)
    {
        using var scope = NewDisposeScope();
        var h = encoder.forward(embeddings.forward(ids));
        return final_layer_norm.forward(h).MoveToOuterDisposeScope();
    }
}

public sealed class ClipTextEmbeddings : nn.Module<Tensor, Tensor>
{
    public Embedding token_embedding;
    public Embedding position_embedding;

    public ClipTextEmbeddings(ClipTextConfig c, ParameterFactory f) : base(nameof(ClipTextEmbeddings))
    {
        token_embedding = new Embedding(c.VocabSize, c.HiddenSize, f);
        position_embedding = new Embedding(c.MaxPositionEmbeddings, c.HiddenSize, f);
        RegisterComponents();
    }

    public override Tensor forward(Tensor ids)
    {
        using var scope = NewDisposeScope();
        var positions = arange(ids.shape[1], ScalarType.Int64, ids.device).unsqueeze(0);
        return (token_embedding.forward(ids) + position_embedding.forward(positions)).MoveToOuterDisposeScope();
    }
}

public sealed class ClipEncoder : nn.Module<Tensor, Tensor>
{
    public ModuleList<ClipEncoderLayer> layers;

    public ClipEncoder(ClipTextConfig c, ParameterFactory f) : base(nameof(ClipEncoder))
    {
        layers = nn.ModuleList(Enumerable.Range(0, c.NumHiddenLayers).Select(_ => new ClipEncoderLayer(c, f)).ToArray());
        RegisterComponents();
    }

    public override Tensor forward(Tensor h)
    {
        using var scope = NewDisposeScope();
        foreach (var layer in layers) h = layer.forward(h);
        return h.alias().MoveToOuterDisposeScope();
    }
}

public sealed class ClipEncoderLayer : nn.Module<Tensor, Tensor>
{
    public ClipAttention self_attn;
    public LayerNorm layer_norm1;
    public ClipMlp mlp;
    public LayerNorm layer_norm2;

    public ClipEncoderLayer(ClipTextConfig c, ParameterFactory f) : base(nameof(ClipEncoderLayer))
    {
        self_attn = new ClipAttention(c, f);
        layer_norm1 = new LayerNorm(c.HiddenSize, f, c.LayerNormEps);
        mlp = new ClipMlp(c, f);
        layer_norm2 = new LayerNorm(c.HiddenSize, f, c.LayerNormEps);
        RegisterComponents();
    }

    public override Tensor forward(Tensor h)
    {
        using var scope = NewDisposeScope();
        h = h + self_attn.forward(layer_norm1.forward(h));
        h = h + mlp.forward(layer_norm2.forward(h));
        return h.MoveToOuterDisposeScope();
    }
}

public sealed class ClipAttention : nn.Module<Tensor, Tensor>
{
    public Linear q_proj, k_proj, v_proj, out_proj;
    private readonly int _heads;

    public ClipAttention(ClipTextConfig c, ParameterFactory f) : base(nameof(ClipAttention))
    {
        _heads = c.NumAttentionHeads;
        q_proj = new Linear(c.HiddenSize, c.HiddenSize, f);
        k_proj = new Linear(c.HiddenSize, c.HiddenSize, f);
        v_proj = new Linear(c.HiddenSize, c.HiddenSize, f);
        out_proj = new Linear(c.HiddenSize, c.HiddenSize, f);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], s = x.shape[1], d = x.shape[2];
        Tensor Heads(Tensor t) => t.view(b, s, _heads, d / _heads).transpose(1, 2);
        // SDPA's default scale is head_dim^-0.5, CLIP's scale; is_causal gives CLIP's causal mask.
        var o = F.scaled_dot_product_attention(Heads(q_proj.forward(x)), Heads(k_proj.forward(x)), Heads(v_proj.forward(x)), is_casual: true);
        return out_proj.forward(o.transpose(1, 2).reshape(b, s, d)).MoveToOuterDisposeScope();
    }
}

public sealed class ClipMlp : nn.Module<Tensor, Tensor>
{
    public Linear fc1, fc2;
    private readonly Func<Tensor, Tensor> _act;

    public ClipMlp(ClipTextConfig c, ParameterFactory f) : base(nameof(ClipMlp))
    {
        fc1 = new Linear(c.HiddenSize, c.IntermediateSize, f);
        fc2 = new Linear(c.IntermediateSize, c.HiddenSize, f);
        _act = Activations.Get(c.HiddenAct);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return fc2.forward(_act(fc1.forward(x))).MoveToOuterDisposeScope();
    }
}
