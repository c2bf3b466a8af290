using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace OmniConsistency.Inference.TextEncoders;

/// <summary>
/// FLUX's CLIP tokenizer: transformers' slow <c>CLIPTokenizer</c> without ftfy, called with
/// <c>padding="max_length", truncation=True</c>: <c>[bos] + ids[:L-2] + [eos]</c>, padded with the pad id.
/// Text cleanup and pre-tokenization are ours (<see cref="ClipTextNormalizer"/>); the byte-level BPE with
/// <c>&lt;/w&gt;</c> word ends is Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/>, given one pre-token at a time.
/// </summary>
public sealed class ClipTokenizer : IPromptTokenizer
{
    // CLIPTokenizer reads merges.txt lines [1 : 49152 - 256 - 2 + 1]: the header line skipped, at most 48894 merges.
    private const int MaxMerges = 49152 - 256 - 2;
    private const string EndOfWord = "</w>";

    private readonly BpeTokenizer _bpe;
    private readonly IReadOnlyList<AddedToken> _addedTokens;
    private readonly Dictionary<string, long> _specialPreTokens;
    private readonly Dictionary<long, string> _tokenById;
    private readonly long _unkId;

    private ClipTokenizer(BpeTokenizer bpe, Dictionary<string, int> vocab, IReadOnlyList<AddedToken> addedTokens,
        long bosId, long eosId, long padId, long unkId, int maxLength)
    {
        _bpe = bpe;
        _addedTokens = addedTokens;
        BosId = bosId;
        EosId = eosId;
        PadId = padId;
        _unkId = unkId;
        DefaultMaxLength = maxLength;
        _tokenById = vocab.ToDictionary(kv => (long)kv.Value, kv => kv.Key);
        // The regex's first alternatives catch <|startoftext|>/<|endoftext|> spelled in other case (lowercased by then);
        // CLIPTokenizer's BPE cache maps exactly these two strings to themselves, i.e. to their vocabulary ids.
        _specialPreTokens = new[] { "<|startoftext|>", "<|endoftext|>" }
            .Where(vocab.ContainsKey).ToDictionary(t => t, t => (long)vocab[t], StringComparer.Ordinal);
    }

    public long BosId { get; }
    public long EosId { get; }
    public long PadId { get; }
    public int DefaultMaxLength { get; }

    /// <summary>Loads <c>vocab.json</c>, <c>merges.txt</c> and (optional) <c>tokenizer_config.json</c> from a tokenizer folder
    /// (FLUX: <c>&lt;model&gt;/tokenizer</c>).</summary>
    public static ClipTokenizer Load(string folder)
    {
        var vocabPath = Path.Combine(folder, "vocab.json");
        var mergesPath = Path.Combine(folder, "merges.txt");
        if (!File.Exists(vocabPath)) throw new TokenizerFormatException(vocabPath, "CLIP vocabulary file not found");
        if (!File.Exists(mergesPath)) throw new TokenizerFormatException(mergesPath, "CLIP merges file not found");

        Dictionary<string, int> vocab;
        try
        {
            vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllBytes(vocabPath))
                ?? throw new TokenizerFormatException(vocabPath, "vocabulary is null");
        }
        catch (JsonException e)
        {
            throw new TokenizerFormatException(vocabPath, $"not a JSON object of token → id ({e.Message})", e);
        }

        // Python: read().strip().split("\n")[1 : MaxMerges + 1]; each line is "left right".
        var lines = File.ReadAllText(mergesPath, Encoding.UTF8).Trim().Split('\n');
        var merges = lines.Skip(1).Take(MaxMerges).ToList();
        foreach (var m in merges)
            if (m.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length != 2)
                throw new TokenizerFormatException(mergesPath, $"merge line '{m}' is not two symbols");

        string bos = "<|startoftext|>", eos = "<|endoftext|>", pad = "<|endoftext|>", unk = "<|endoftext|>";
        int maxLength = 77;
        var configPath = Path.Combine(folder, "tokenizer_config.json");
        if (File.Exists(configPath))
        {
            using var doc = AddedTokens.ParseJson(configPath);
            var root = doc.RootElement;
            bos = AddedTokens.ReadTokenString(root, "bos_token") ?? bos;
            eos = AddedTokens.ReadTokenString(root, "eos_token") ?? eos;
            pad = AddedTokens.ReadTokenString(root, "pad_token") ?? pad;
            unk = AddedTokens.ReadTokenString(root, "unk_token") ?? unk;
            if (root.TryGetProperty("model_max_length", out var ml) && ml.TryGetInt32(out var v) && v is >= 2 and < 1_000_000) maxLength = v;
        }
        long Id(string token) => vocab.TryGetValue(token, out var id) ? id
            : throw new TokenizerFormatException(vocabPath, $"special token '{token}' is not in the vocabulary");
        var added = AddedTokens.ReadFromConfig(configPath)
            ?? [new AddedToken(bos, Id(bos)), new AddedToken(eos, Id(eos))];

        var bpe = BpeTokenizer.Create(new BpeOptions(vocab)
        {
            Merges = merges,
            EndOfWordSuffix = EndOfWord,
            ByteLevel = true,
            UnknownToken = unk,
        });
        return new ClipTokenizer(bpe, vocab, added, Id(bos), Id(eos), Id(pad), Id(unk), maxLength);
    }

    public TokenizationResult Encode(string text, int? maxLength = null)
    {
        ArgumentNullException.ThrowIfNull(text);
        int length = maxLength ?? DefaultMaxLength;
        if (length < 2) throw new ArgumentOutOfRangeException(nameof(maxLength), length, "CLIP needs room for bos and eos (max length >= 2)");

        var t = Analyze(text);
        var ids = t.Ids;
        int keep = Math.Min(ids.Count, length - 2);
        var inputIds = new long[length];
        var mask = new long[length];
        inputIds[0] = BosId;
        for (int i = 0; i < keep; i++) inputIds[1 + i] = ids[i];
        inputIds[1 + keep] = EosId;
        for (int i = 2 + keep; i < length; i++) inputIds[i] = PadId;
        for (int i = 0; i < keep + 2; i++) mask[i] = 1;
        return new TokenizationResult(inputIds, mask, ids.Count + 2, ids.Count - keep, t.TextFrom(keep, this));
    }

    /// <summary>The token ids of a text without bos/eos, untruncated.</summary>
    public List<long> Tokenize(string text) => Analyze(text).Ids;

    /// <summary>The prompt as the tokenizer sees it: cleaned, lowercased, words separated by single spaces.</summary>
    public string Normalize(string text) => Analyze(text).Normalized;

    private Tokenized Analyze(string text)
    {
        var ids = new List<long>();
        var tokenWord = new List<int>();
        var words = new List<(int Start, int End)>();
        var normalized = new StringBuilder();
        void AddWord(string word, IEnumerable<long> wordIds)
        {
            words.Add((normalized.Length, normalized.Length + word.Length));
            normalized.Append(word);
            foreach (var id in wordIds)
            {
                ids.Add(id);
                tokenWord.Add(words.Count - 1);
            }
        }
        foreach (var piece in AddedTokens.Split(text, _addedTokens))
        {
            if (normalized.Length > 0 && normalized[^1] != ' ') normalized.Append(' ');
            if (piece.Token is not null)
            {
                AddWord(piece.Token.Content, [piece.Token.Id]);
                continue;
            }
            var cleaned = ClipTextNormalizer.Clean(piece.Text);
            int at = 0;
            foreach (var (start, length) in ClipTextNormalizer.PreTokenizeSpans(cleaned))
            {
                normalized.Append(cleaned, at, start - at);
                at = start + length;
                var word = cleaned.Substring(start, length);
                AddWord(word, WordIds(word));
            }
            normalized.Append(cleaned, at, cleaned.Length - at);
        }
        return new Tokenized(ids, tokenWord, words, normalized.ToString().TrimEnd());
    }

    private IEnumerable<long> WordIds(string word)
    {
        if (_specialPreTokens.TryGetValue(word, out var special)) return [special];
        var wordIds = _bpe.EncodeToIds(word, considerPreTokenization: false, considerNormalization: false);
        return wordIds.Count == 0 ? [_unkId] : wordIds.Select(i => (long)i);
    }

    private sealed record Tokenized(List<long> Ids, List<int> TokenWord, List<(int Start, int End)> Words, string Normalized)
    {
        /// <summary>The normalised text from token <paramref name="first"/> on: the rest of a word split by the cut
        /// (decoded from its tokens), then the text of the following words.</summary>
        public string TextFrom(int first, ClipTokenizer tokenizer)
        {
            if (first >= Ids.Count) return "";
            int word = TokenWord[first];
            if (first == 0 || TokenWord[first - 1] != word)
                return Normalized[Math.Min(Words[word].Start, Normalized.Length)..].Trim();
            int last = first;
            while (last + 1 < Ids.Count && TokenWord[last + 1] == word) last++;
            var partial = tokenizer.Decode(Ids.Skip(first).Take(last - first + 1));
            return (partial + Normalized[Math.Min(Words[word].End, Normalized.Length)..]).Trim();
        }
    }

    /// <summary>Ids back to text: tokens joined, <c>&lt;/w&gt;</c> as a space, byte-level characters to UTF-8 bytes.</summary>
    public string Decode(IEnumerable<long> ids)
    {
        var bytes = new List<byte>();
        foreach (var id in ids)
        {
            if (!_tokenById.TryGetValue(id, out var token)) continue;
            if (_specialPreTokens.ContainsKey(token))
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(token));
                continue;
            }
            foreach (var part in token.Replace(EndOfWord, " "))
                if (ByteLevelAlphabet.TryGetByte(part, out var b)) bytes.Add(b);
                else bytes.AddRange(Encoding.UTF8.GetBytes(part.ToString()));
        }
        return Encoding.UTF8.GetString(bytes.ToArray()).Trim();
    }
}

/// <summary>GPT-2's <c>bytes_to_unicode</c> table, inverted: the printable character that stands for each byte.</summary>
internal static class ByteLevelAlphabet
{
    private static readonly Dictionary<char, byte> ByteOf = Build();

    public static bool TryGetByte(char c, out byte b) => ByteOf.TryGetValue(c, out b);

    private static Dictionary<char, byte> Build()
    {
        var map = new Dictionary<char, byte>();
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[printable ? (char)b : (char)(256 + n++)] = (byte)b;
        }
        return map;
    }
}
