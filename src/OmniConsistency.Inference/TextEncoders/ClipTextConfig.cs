namespace OmniConsistency.Inference.TextEncoders;

/// <summary>The <c>CLIPTextConfig</c> fields the text tower uses (defaults are transformers').</summary>
public sealed record ClipTextConfig
{
    public int VocabSize { get; init; } = 49408;
    public int HiddenSize { get; init; } = 512;
    public int IntermediateSize { get; init; } = 2048;
    public int NumHiddenLayers { get; init; } = 12;
    public int NumAttentionHeads { get; init; } = 8;
    public int MaxPositionEmbeddings { get; init; } = 77;
    public string HiddenAct { get; init; } = "quick_gelu";
    public double LayerNormEps { get; init; } = 1e-5;
    /// <summary>2 in legacy configs (openai/clip-vit-large-patch14, FLUX): the pooled row is then argmax(input_ids).</summary>
    public long? EosTokenId { get; init; } = 49407;

    public int HeadDim => HiddenSize / NumAttentionHeads;

    public static ClipTextConfig FromFile(string configPath)
    {
        var j = ModelConfigJson.Read(configPath, section: "text_config");
        var c = new ClipTextConfig
        {
            VocabSize = j.Int("vocab_size", 49408),
            HiddenSize = j.Int("hidden_size", 512),
            IntermediateSize = j.Int("intermediate_size", 2048),
            NumHiddenLayers = j.Int("num_hidden_layers", 12, min: 0),
            NumAttentionHeads = j.Int("num_attention_heads", 8),
            MaxPositionEmbeddings = j.Int("max_position_embeddings", 77),
            HiddenAct = j.String("hidden_act", "quick_gelu"),
            LayerNormEps = j.Double("layer_norm_eps", 1e-5),
            EosTokenId = j.Has("eos_token_id") ? j.OptionalLong("eos_token_id") : 49407,
        };
        if (c.HiddenSize % c.NumAttentionHeads != 0)
            throw new ModelConfigException(configPath, $"hidden_size {c.HiddenSize} is not divisible by num_attention_heads {c.NumAttentionHeads}");
        try
        {
            Activations.Get(c.HiddenAct);
        }
        catch (NotSupportedException e)
        {
            throw new ModelConfigException(configPath, e.Message, e);
        }
        return c;
    }
}
