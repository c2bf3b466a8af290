namespace OmniConsistency.Inference.TextEncoders;

/// <summary>The <c>T5Config</c> fields the encoder uses (defaults are transformers').</summary>
public sealed record T5EncoderConfig
{
    public int VocabSize { get; init; } = 32128;
    public int DModel { get; init; } = 512;
    public int DKv { get; init; } = 64;
    public int DFf { get; init; } = 2048;
    public int NumLayers { get; init; } = 6;
    public int NumHeads { get; init; } = 8;
    public int RelativeAttentionNumBuckets { get; init; } = 32;
    public int RelativeAttentionMaxDistance { get; init; } = 128;
    public double LayerNormEpsilon { get; init; } = 1e-6;
    /// <summary>Activation of the feed-forward block (gated-gelu → gelu_new).</summary>
    public string DenseActFn { get; init; } = "relu";
    /// <summary>Gated FF (<c>wi_0</c>, <c>wi_1</c>, <c>wo</c>) rather than plain (<c>wi</c>, <c>wo</c>).</summary>
    public bool IsGatedAct { get; init; }

    public int InnerDim => NumHeads * DKv;

    public static T5EncoderConfig FromFile(string configPath)
    {
        var j = ModelConfigJson.Read(configPath);
        // T5Config.__init__: feed_forward_proj "[gated-]act" → dense_act_fn / is_gated_act, "gated-gelu" → gelu_new.
        // Explicit dense_act_fn / is_gated_act keys are then applied as attributes and win (PretrainedConfig kwargs).
        var proj = j.String("feed_forward_proj", "relu");
        var parts = proj.Split('-');
        if ((parts.Length > 1 && parts[0] != "gated") || parts.Length > 2)
            throw new ModelConfigException(configPath, $"feed_forward_proj '{proj}' is not '[gated-]<activation>'");
        var act = proj == "gated-gelu" ? "gelu_new" : parts[^1];
        var c = new T5EncoderConfig
        {
            VocabSize = j.Int("vocab_size", 32128),
            DModel = j.Int("d_model", 512),
            DKv = j.Int("d_kv", 64),
            DFf = j.Int("d_ff", 2048),
            NumLayers = j.Int("num_layers", 6),
            NumHeads = j.Int("num_heads", 8),
            RelativeAttentionNumBuckets = j.Int("relative_attention_num_buckets", 32, min: 2),
            RelativeAttentionMaxDistance = j.Int("relative_attention_max_distance", 128, min: 2),
            LayerNormEpsilon = j.Double("layer_norm_epsilon", 1e-6),
            DenseActFn = j.String("dense_act_fn", act),
            IsGatedAct = j.OptionalBool("is_gated_act") ?? parts[0] == "gated",
        };
        try
        {
            Activations.Get(c.DenseActFn);
        }
        catch (NotSupportedException e)
        {
            throw new ModelConfigException(configPath, e.Message, e);
        }
        return c;
    }
}
