using static TorchSharp.torch;

namespace OmniConsistency.Inference.TextEncoders;

/// <summary>
/// One prompt tokenized to a fixed length, with what truncation cut off so the service can tell the user.
/// </summary>
/// <param name="InputIds">Exactly <c>MaxLength</c> ids: specials, tokens, padding.</param>
/// <param name="AttentionMask">1 on the special and token positions, 0 on padding (FLUX does not use it).</param>
/// <param name="UntruncatedLength">Ids the whole prompt needs, specials included (transformers' <c>len(tokenizer(p).input_ids)</c>).</param>
/// <param name="DroppedTokenCount">Tokens removed by truncation (0 when the prompt fits).</param>
/// <param name="DroppedText">The removed tokens decoded back to text ("" when none). Decoded from tokens, so it is the
/// tokenizer's normalised spelling (lowercase for CLIP).</param>
public sealed record TokenizationResult(
    long[] InputIds,
    long[] AttentionMask,
    int UntruncatedLength,
    int DroppedTokenCount,
    string DroppedText)
{
    public int MaxLength => InputIds.Length;
    public bool Truncated => DroppedTokenCount > 0;

    /// <summary>Stacks the ids of several results (same length) into an int64 tensor [B, L] on the CPU.</summary>
    public static Tensor StackIds(IReadOnlyList<TokenizationResult> results) => Stack(results, r => r.InputIds);

    public static Tensor StackAttentionMasks(IReadOnlyList<TokenizationResult> results) => Stack(results, r => r.AttentionMask);

    private static Tensor Stack(IReadOnlyList<TokenizationResult> results, Func<TokenizationResult, long[]> row)
    {
        if (results.Count == 0) throw new ArgumentException("no tokenization results to stack", nameof(results));
        int length = results[0].MaxLength;
        if (results.Any(r => r.MaxLength != length))
            throw new ArgumentException("tokenization results have different lengths", nameof(results));
        var flat = results.SelectMany(row).ToArray();
        return tensor(flat, [results.Count, length], ScalarType.Int64);
    }
}

/// <summary>Turns prompts into fixed-length token ids the way the reference pipeline's tokenizer call does.</summary>
public interface IPromptTokenizer
{
    /// <summary>The tokenizer's model_max_length (77 for CLIP, 512 for T5).</summary>
    int DefaultMaxLength { get; }

    /// <summary><c>tokenizer(text, padding="max_length", max_length=maxLength, truncation=True)</c>.</summary>
    TokenizationResult Encode(string text, int? maxLength = null);
}

/// <summary>A tokenizer folder is missing a file or holds data that cannot be used.</summary>
public sealed class TokenizerFormatException(string path, string problem, Exception? inner = null)
    : Exception($"Invalid tokenizer data '{path}': {problem}", inner)
{
    public string FilePath { get; } = path;
}
