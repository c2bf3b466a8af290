using System.Text.Json;

namespace OmniConsistency.Inference.TextEncoders;

/// <summary>A tokenizer's added (special) token as transformers keeps it: matched literally in the raw text.</summary>
/// <param name="LStrip">Eats the whitespace on its left (the text before it is right-stripped).</param>
/// <param name="RStrip">Eats the whitespace on its right.</param>
public sealed record AddedToken(string Content, long Id, bool LStrip = false, bool RStrip = false);

/// <summary>One piece of a prompt after splitting at added tokens: plain text, or an added token.</summary>
internal readonly record struct TextPiece(string Text, AddedToken? Token);

internal static class AddedTokens
{
    /// <summary>
    /// transformers' slow-tokenizer split (<c>PreTrainedTokenizer.tokenize</c>): cut the text at every literal
    /// occurrence of an added token (leftmost first, then longest), apply the tokens' lstrip/rstrip to their
    /// neighbours, and drop text pieces that end up empty.
    /// </summary>
    public static List<TextPiece> Split(string text, IReadOnlyList<AddedToken> tokens)
    {
        var pieces = new List<TextPiece>();
        int start = 0, i = 0;
        while (i < text.Length)
        {
            AddedToken? match = null;
            foreach (var t in tokens)
                if (t.Content.Length > 0 && string.CompareOrdinal(text, i, t.Content, 0, t.Content.Length) == 0
                    && (match is null || t.Content.Length > match.Content.Length))
                    match = t;
            if (match is null)
            {
                i++;
                continue;
            }
            if (i > start) pieces.Add(new TextPiece(text[start..i], null));
            pieces.Add(new TextPiece(match.Content, match));
            i += match.Content.Length;
            start = i;
        }
        if (start < text.Length) pieces.Add(new TextPiece(text[start..], null));

        for (int k = 0; k < pieces.Count; k++)
        {
            var token = pieces[k].Token;
            if (token is null) continue;
            if (token.RStrip && k + 1 < pieces.Count && pieces[k + 1].Token is null)
                pieces[k + 1] = pieces[k + 1] with { Text = PyText.LStrip(pieces[k + 1].Text) };
            if (token.LStrip && k > 0 && pieces[k - 1].Token is null)
                pieces[k - 1] = pieces[k - 1] with { Text = PyText.RStrip(pieces[k - 1].Text) };
        }
        pieces.RemoveAll(p => p.Token is null && p.Text.Length == 0);
        return pieces;
    }

    /// <summary>
    /// Reads <c>added_tokens_decoder</c> from a transformers <c>tokenizer_config.json</c>; null when the file or the
    /// entry is absent.
    /// </summary>
    public static List<AddedToken>? ReadFromConfig(string tokenizerConfigPath)
    {
        if (!File.Exists(tokenizerConfigPath)) return null;
        using var doc = ParseJson(tokenizerConfigPath);
        if (!doc.RootElement.TryGetProperty("added_tokens_decoder", out var decoder) || decoder.ValueKind != JsonValueKind.Object)
            return null;
        var list = new List<AddedToken>();
        foreach (var p in decoder.EnumerateObject())
        {
            if (!long.TryParse(p.Name, out var id) || p.Value.ValueKind != JsonValueKind.Object
                || !p.Value.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                throw new TokenizerFormatException(tokenizerConfigPath, $"added_tokens_decoder entry '{p.Name}' is not an id with a content string");
            list.Add(new AddedToken(content.GetString()!, id, Flag(p.Value, "lstrip"), Flag(p.Value, "rstrip")));
        }
        return list;
    }

    /// <summary>A string-valued entry of tokenizer_config.json / special_tokens_map.json (plain or {"content": ...}).</summary>
    public static string? ReadTokenString(JsonElement root, string key)
    {
        if (!root.TryGetProperty(key, out var v)) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        if (v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String) return c.GetString();
        return null;
    }

    public static JsonDocument ParseJson(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new TokenizerFormatException(path, $"not valid JSON ({e.Message})", e);
        }
    }

    private static bool Flag(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.True;
}

/// <summary>Python <c>str</c> behaviours the reference tokenizers rely on, where .NET's differ.</summary>
internal static class PyText
{
    /// <summary>Python's <c>str.isspace()</c> for one code point (bidi WS/B/S or category Zs).</summary>
    public static bool IsSpace(int cp) => cp switch
    {
        >= 0x09 and <= 0x0D => true,
        >= 0x1C and <= 0x20 => true,
        0x85 or 0xA0 or 0x1680 or 0x2028 or 0x2029 or 0x202F or 0x205F or 0x3000 => true,
        >= 0x2000 and <= 0x200A => true,
        _ => false,
    };

    public static string LStrip(string s)
    {
        int i = 0;
        while (i < s.Length && IsSpace(s[i])) i++;
        return s[i..];
    }

    public static string RStrip(string s)
    {
        int j = s.Length;
        while (j > 0 && IsSpace(s[j - 1])) j--;
        return s[..j];
    }

    /// <summary>Python's <c>str.split()</c> with no separator: runs of whitespace separate, no empty items.</summary>
    public static List<string> SplitWhitespace(string s)
    {
        var parts = new List<string>();
        int i = 0;
        while (i < s.Length)
        {
            while (i < s.Length && IsSpace(s[i])) i++;
            int start = i;
            while (i < s.Length && !IsSpace(s[i])) i++;
            if (i > start) parts.Add(s[start..i]);
        }
        return parts;
    }
}
