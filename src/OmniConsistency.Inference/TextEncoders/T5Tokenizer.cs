using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace OmniConsistency.Inference.TextEncoders;

/// <summary>
/// FLUX's T5 tokenizer: transformers' slow <c>T5Tokenizer</c> (legacy=True) called with
/// <c>padding="max_length", max_length=L, truncation=True</c>. The text is split at the added tokens
/// (<c>&lt;/s&gt;</c>, <c>&lt;pad&gt;</c>, <c>&lt;unk&gt;</c>, <c>&lt;extra_id_N&gt;</c>), each other piece is encoded by the
/// SentencePiece Unigram model (the model's nmt_nfkc normaliser, dummy prefix and whitespace rules in
/// <see cref="SentencePieceTextNormalizer"/>, then Microsoft.ML.Tokenizers' <see cref="SentencePieceTokenizer"/> Viterbi), <c>&lt;/s&gt;</c> is appended unless the ids already end with it, truncation keeps
/// L-1 tokens, and padding fills with the pad id.
/// </summary>
public sealed class T5Tokenizer : IPromptTokenizer
{
    // SentencePieceTokenizer 2.0.1 throws IndexOutOfRange on a Unigram model whose bos_id is -1 (T5's layout).
    // Appending a second trainer_spec (protobuf merges repeated message fields) sets bos_id = 0, bos_piece = "<pad>";
    // we never ask for a BOS, so nothing else changes.
    private static readonly byte[] BosWorkaround = [0x12, 0x0B, 0xC8, 0x02, 0x00, 0xF2, 0x02, 0x05, 0x3C, 0x70, 0x61, 0x64, 0x3E];

    private readonly SentencePieceTokenizer _sp;
    private readonly SentencePieceTextNormalizer _normalizer;
    private readonly IReadOnlyList<AddedToken> _addedTokens;
    private readonly Dictionary<long, AddedToken> _addedById;

    private T5Tokenizer(SentencePieceTokenizer sp, SentencePieceTextNormalizer normalizer, IReadOnlyList<AddedToken> addedTokens,
        long eosId, long padId, int maxLength)
    {
        _sp = sp;
        _normalizer = normalizer;
        _addedTokens = addedTokens;
        _addedById = addedTokens.GroupBy(t => t.Id).ToDictionary(g => g.Key, g => g.First());
        EosId = eosId;
        PadId = padId;
        DefaultMaxLength = maxLength;
    }

    public long EosId { get; }
    public long PadId { get; }
    public int DefaultMaxLength { get; }

    /// <summary>Loads <c>spiece.model</c> and (optional) <c>tokenizer_config.json</c> / <c>added_tokens.json</c> from a
    /// tokenizer folder (FLUX: <c>&lt;model&gt;/tokenizer_2</c>).</summary>
    public static T5Tokenizer Load(string folder)
    {
        var modelPath = Path.Combine(folder, "spiece.model");
        if (!File.Exists(modelPath)) throw new TokenizerFormatException(modelPath, "SentencePiece model file not found");
        SentencePieceTokenizer sp;
        var bytes = File.ReadAllBytes(modelPath);
        try
        {
            using var stream = new MemoryStream(bytes.Concat(BosWorkaround).ToArray());
            sp = SentencePieceTokenizer.Create(stream, false, false);
        }
        catch (Exception e) when (e is not TokenizerFormatException)
        {
            throw new TokenizerFormatException(modelPath, $"cannot read the SentencePiece model ({e.Message})", e);
        }

        var normalizer = SentencePieceTextNormalizer.FromModel(bytes, modelPath);

        string eos = "</s>", pad = "<pad>", unk = "<unk>";
        int maxLength = 512, extraIds = 100;
        var configPath = Path.Combine(folder, "tokenizer_config.json");
        if (File.Exists(configPath))
        {
            using var doc = AddedTokens.ParseJson(configPath);
            var root = doc.RootElement;
            eos = AddedTokens.ReadTokenString(root, "eos_token") ?? eos;
            pad = AddedTokens.ReadTokenString(root, "pad_token") ?? pad;
            unk = AddedTokens.ReadTokenString(root, "unk_token") ?? unk;
            if (root.TryGetProperty("model_max_length", out var ml) && ml.TryGetInt32(out var v) && v is >= 1 and < 1_000_000) maxLength = v;
            if (root.TryGetProperty("extra_ids", out var ex) && ex.TryGetInt32(out var e) && e >= 0) extraIds = e;
        }

        int vocabSize = sp.Vocabulary.Count;
        long PieceId(string piece) => sp.Vocabulary.TryGetValue(piece, out var id) ? id
            : throw new TokenizerFormatException(modelPath, $"special token '{piece}' is not a piece of the model");
        // Without added_tokens_decoder, T5Tokenizer.__init__ registers pad/eos/unk and <extra_id_i> at
        // len(sp) - 1 + extra_ids - i, the extra ids stripping whitespace on both sides.
        var added = AddedTokens.ReadFromConfig(configPath)
            ?? [new AddedToken(pad, PieceId(pad)), new AddedToken(eos, PieceId(eos)), new AddedToken(unk, PieceId(unk)),
                .. Enumerable.Range(0, extraIds).Select(i => new AddedToken($"<extra_id_{i}>", vocabSize - 1 + extraIds - i, true, true))];
        long AddedId(string content) => added.FirstOrDefault(t => t.Content == content)?.Id ?? PieceId(content);
        return new T5Tokenizer(sp, normalizer, added, AddedId(eos), AddedId(pad), maxLength);
    }

    public TokenizationResult Encode(string text, int? maxLength = null)
    {
        ArgumentNullException.ThrowIfNull(text);
        int length = maxLength ?? DefaultMaxLength;
        if (length < 1) throw new ArgumentOutOfRangeException(nameof(maxLength), length, "max length must be at least 1");

        var ids = Tokenize(text);
        var full = WithEos(ids);
        List<long> kept, dropped;
        if (ids.Count + 1 > length)
        {
            // transformers truncates the token ids to L - (special tokens to add = 1), then appends eos if absent.
            kept = WithEos(ids.Take(length - 1).ToList());
            dropped = ids.Skip(length - 1).ToList();
        }
        else
        {
            kept = full;
            dropped = [];
        }
        var inputIds = new long[length];
        var mask = new long[length];
        for (int i = 0; i < length; i++)
        {
            inputIds[i] = i < kept.Count ? kept[i] : PadId;
            mask[i] = i < kept.Count ? 1 : 0;
        }
        return new TokenizationResult(inputIds, mask, full.Count, dropped.Count, Decode(dropped));
    }

    /// <summary>The token ids of a text without the final eos, untruncated.</summary>
    public List<long> Tokenize(string text)
    {
        var ids = new List<long>();
        foreach (var piece in AddedTokens.Split(text, _addedTokens))
        {
            if (piece.Token is not null) ids.Add(piece.Token.Id);
            else
            {
                var normalized = _normalizer.Normalize(piece.Text);
                if (normalized.Length > 0)
                    AppendMergingUnknowns(ids, _sp.EncodeToIds(normalized, addBeginningOfSentence: false, addEndOfSentence: false,
                        considerPreTokenization: false, considerNormalization: false));
            }
        }
        return ids;
    }

    // SentencePieceProcessor merges a run of unknown pieces into one <unk> ("so that decoder can copy unknown
    // tokens"); SentencePieceTokenizer emits one <unk> per unknown character, so the runs are merged here.
    private void AppendMergingUnknowns(List<long> ids, IReadOnlyList<int> pieceIds)
    {
        int unk = _sp.UnknownId;
        for (int k = 0; k < pieceIds.Count; k++)
            if (pieceIds[k] != unk || k == 0 || pieceIds[k - 1] != unk) ids.Add(pieceIds[k]);
    }

    /// <summary>Ids back to text (SentencePiece decoding; added tokens spelled out).</summary>
    public string Decode(IEnumerable<long> ids)
    {
        var parts = new List<string>();
        var run = new List<int>();
        void Flush()
        {
            if (run.Count > 0) parts.Add(_sp.Decode(run, considerSpecialTokens: false));
            run.Clear();
        }
        foreach (var id in ids)
        {
            if (_addedById.TryGetValue(id, out var t))
            {
                Flush();
                parts.Add(t.Content);
            }
            else run.Add((int)id);
        }
        Flush();
        return string.Join(' ', parts.Where(p => p.Length > 0)).Trim();
    }

    // T5Tokenizer._add_eos_if_not_present.
    private List<long> WithEos(List<long> ids) =>
        ids.Count > 0 && ids[^1] == EosId ? [.. ids] : [.. ids, EosId];
}
