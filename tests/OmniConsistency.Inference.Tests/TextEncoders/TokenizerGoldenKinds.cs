using System.Text.Json;
using OmniConsistency.Inference.TextEncoders;
using OmniConsistency.Inference.Tests.Golden;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.TextEncoders;

/// <summary>Shared by the tokenizer kinds: params.prompts through a tokenizer → input_ids, attention_mask, lengths_untruncated.</summary>
internal static class TokenizerKind
{
    public static IReadOnlyDictionary<string, Tensor> Run(GoldenCase c, IPromptTokenizer tokenizer)
    {
        var prompts = c.Params.GetProperty("prompts").EnumerateArray().Select(p => p.GetString()!).ToList();
        int maxLength = c.Params.GetProperty("max_length").GetInt32();
        var results = prompts.Select(p => tokenizer.Encode(p, maxLength)).ToList();
        return new Dictionary<string, Tensor>
        {
            ["input_ids"] = TokenizationResult.StackIds(results),
            ["attention_mask"] = TokenizationResult.StackAttentionMasks(results),
            ["lengths_untruncated"] = tensor(results.Select(r => (long)r.UntruncatedLength).ToArray()),
        };
    }

    public static string TokenizerFolder(GoldenCase c, string defaultName) =>
        Path.Combine(c.ModelPath, c.Params.TryGetProperty("tokenizer", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : defaultName);
}

[GoldenKind("tokenize_clip")]
public sealed class TokenizeClipKind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c) =>
        TokenizerKind.Run(c, ClipTokenizer.Load(TokenizerKind.TokenizerFolder(c, "tokenizer")));
}

[GoldenKind("tokenize_t5")]
public sealed class TokenizeT5Kind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c) =>
        TokenizerKind.Run(c, T5Tokenizer.Load(TokenizerKind.TokenizerFolder(c, "tokenizer_2")));
}
