using OmniConsistency.Inference.Nn;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.TextEncoders;

/// <summary>
/// The text conditioning of one generation: T5 hidden states, CLIP pooled vector and the (zero) text position ids,
/// plus what each tokenizer cut off.
/// </summary>
public sealed class EncodedPrompt(
    Tensor promptEmbeds, Tensor pooledPromptEmbeds, Tensor textIds,
    IReadOnlyList<TokenizationResult> clipTokens, IReadOnlyList<TokenizationResult> t5Tokens) : IDisposable
{
    /// <summary>T5 last hidden state [B·n, L, d_t5] in the T5 dtype.</summary>
    public Tensor PromptEmbeds { get; } = promptEmbeds;
    /// <summary>CLIP pooled output [B·n, d_clip] in the CLIP dtype.</summary>
    public Tensor PooledPromptEmbeds { get; } = pooledPromptEmbeds;
    /// <summary>Zeros [L, 3] in the CLIP dtype (text tokens get the identity RoPE rotation).</summary>
    public Tensor TextIds { get; } = textIds;
    /// <summary>One per prompt (before the per-prompt image repeat).</summary>
    public IReadOnlyList<TokenizationResult> ClipTokens { get; } = clipTokens;
    public IReadOnlyList<TokenizationResult> T5Tokens { get; } = t5Tokens;
    public bool Truncated => ClipTokens.Any(t => t.Truncated) || T5Tokens.Any(t => t.Truncated);

    public void Dispose()
    {
        PromptEmbeds.Dispose();
        PooledPromptEmbeds.Dispose();
        TextIds.Dispose();
    }
}

/// <summary>
/// FLUX's <c>encode_prompt</c> as OmniConsistency's pipeline calls it: CLIP (77 tokens, pooled output only) on
/// <c>prompt</c>, T5 (max_sequence_length tokens, full hidden states, no attention mask) on <c>prompt_2</c>
/// (defaulting to <c>prompt</c>), each output repeated <c>num_images_per_prompt</c> times.
/// </summary>
public sealed class PromptEncoder : IDisposable
{
    /// <summary>The pipeline rejects longer T5 sequences (<c>max_sequence_length</c> ≤ 512).</summary>
    public const int MaxSequenceLengthLimit = 512;

    private readonly bool _ownsModels;

    public PromptEncoder(ClipTokenizer clipTokenizer, ClipTextModel clip, T5Tokenizer t5Tokenizer, T5EncoderModel t5, bool ownsModels = true)
    {
        ClipTokenizer = clipTokenizer;
        Clip = clip;
        T5Tokenizer = t5Tokenizer;
        T5 = t5;
        _ownsModels = ownsModels;
        // Read once: the weights stay where they were loaded (a prompt cache keys its entries on them).
        var clipWeight = clip.parameters().First();
        var t5Weight = t5.parameters().First();
        ClipDType = clipWeight.dtype;
        ClipDevice = clipWeight.device;
        T5DType = t5Weight.dtype;
        T5Device = t5Weight.device;
    }

    public ClipTokenizer ClipTokenizer { get; }
    public ClipTextModel Clip { get; }
    public T5Tokenizer T5Tokenizer { get; }
    public T5EncoderModel T5 { get; }
    public ScalarType ClipDType { get; }
    public Device ClipDevice { get; }
    public ScalarType T5DType { get; }
    public Device T5Device { get; }

    /// <summary>
    /// Loads <c>tokenizer/</c>, <c>text_encoder/</c>, <c>tokenizer_2/</c> and <c>text_encoder_2/</c> of a FLUX model folder.
    /// <paramref name="t5Factory"/> defaults to <paramref name="clipFactory"/>.
    /// </summary>
    public static PromptEncoder FromPretrained(string modelFolder, ParameterFactory clipFactory, ParameterFactory? t5Factory = null)
    {
        var clipTokenizer = ClipTokenizer.Load(Path.Combine(modelFolder, "tokenizer"));
        var t5Tokenizer = T5Tokenizer.Load(Path.Combine(modelFolder, "tokenizer_2"));
        var clip = ClipTextModel.FromPretrained(Path.Combine(modelFolder, "text_encoder"), clipFactory);
        try
        {
            var t5 = T5EncoderModel.FromPretrained(Path.Combine(modelFolder, "text_encoder_2"), t5Factory ?? clipFactory);
            return new PromptEncoder(clipTokenizer, clip, t5Tokenizer, t5);
        }
        catch
        {
            clip.Dispose();
            throw;
        }
    }

    public EncodedPrompt Encode(string prompt, string? prompt2 = null, int maxSequenceLength = MaxSequenceLengthLimit, int numImagesPerPrompt = 1) =>
        // Python's `prompt_2 or prompt`: an empty prompt_2 falls back too.
        Encode([prompt], string.IsNullOrEmpty(prompt2) ? null : [prompt2], maxSequenceLength, numImagesPerPrompt);

    /// <param name="prompts">CLIP prompts, one per batch row.</param>
    /// <param name="prompts2">T5 prompts (same count); null or empty = <paramref name="prompts"/>.</param>
    public EncodedPrompt Encode(IReadOnlyList<string> prompts, IReadOnlyList<string>? prompts2 = null, int maxSequenceLength = MaxSequenceLengthLimit, int numImagesPerPrompt = 1)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        if (prompts.Count == 0) throw new ArgumentException("at least one prompt is needed", nameof(prompts));
        if (prompts.Any(p => p is null)) throw new ArgumentException("prompts must not be null", nameof(prompts));
        if (prompts2 is null || prompts2.Count == 0) prompts2 = prompts;
        if (prompts2.Count != prompts.Count || prompts2.Any(p => p is null))
            throw new ArgumentException($"prompt_2 has {prompts2.Count} entries for {prompts.Count} prompts (or holds null)", nameof(prompts2));
        if (maxSequenceLength is < 1 or > MaxSequenceLengthLimit)
            throw new ArgumentOutOfRangeException(nameof(maxSequenceLength), maxSequenceLength, $"max_sequence_length must be in 1..{MaxSequenceLengthLimit}");
        if (numImagesPerPrompt < 1)
            throw new ArgumentOutOfRangeException(nameof(numImagesPerPrompt), numImagesPerPrompt, "num_images_per_prompt must be at least 1");

        var clipTokens = prompts.Select(p => ClipTokenizer.Encode(p)).ToList();
        var t5Tokens = prompts2.Select(p => T5Tokenizer.Encode(p, maxSequenceLength)).ToList();

        using var scope = NewDisposeScope();
        int batch = prompts.Count;
        using var clipOutput = Clip.forward(TokenizationResult.StackIds(clipTokens));
        var pooled = clipOutput.PooledOutput.repeat(1, numImagesPerPrompt).view(batch * numImagesPerPrompt, -1);
        var embeds = T5.forward(TokenizationResult.StackIds(t5Tokens));
        embeds = embeds.repeat(1, numImagesPerPrompt, 1).view(batch * numImagesPerPrompt, maxSequenceLength, -1);
        var textIds = zeros([maxSequenceLength, 3], pooled.dtype, pooled.device);
        return new EncodedPrompt(embeds.MoveToOuterDisposeScope(), pooled.MoveToOuterDisposeScope(), textIds.MoveToOuterDisposeScope(), clipTokens, t5Tokens);
    }

    public void Dispose()
    {
        if (!_ownsModels) return;
        Clip.Dispose();
        T5.Dispose();
    }
}
