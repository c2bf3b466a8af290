using System.Text;

namespace OmniConsistency.Inference.TextEncoders;

/// <summary>
/// SentencePiece's <c>Normalizer::Normalize</c> (normalizer.cc, sentencepiece 0.1.97) driven by the model's own
/// <c>normalizer_spec</c>: longest-prefix rules from the precompiled charsmap (a Darts double-array trie plus a pool of
/// NUL-terminated replacements), leading / trailing / repeated whitespace removed, dummy prefix, spaces escaped as U+2581.
/// Ours because Microsoft.ML.Tokenizers 2.0.1 keeps a character whose rule replaces it with the empty string (nmt_nfkc
/// deletes U+0001-0008, 000B, 000E-001F, 007F, 008F, 009F): it then became an extra &lt;unk&gt; instead of vanishing.
/// </summary>
internal sealed class SentencePieceTextNormalizer
{
    private static readonly byte[] SpaceSymbol = "\u2581"u8.ToArray();
    private static readonly byte[] ReplacementChar = "\uFFFD"u8.ToArray();

    private readonly uint[] _trie;
    private readonly byte[] _pool;
    private readonly bool _addDummyPrefix, _removeExtraWhitespaces, _escapeWhitespaces;

    private SentencePieceTextNormalizer(uint[] trie, byte[] pool, bool addDummyPrefix, bool removeExtraWhitespaces, bool escapeWhitespaces)
    {
        _trie = trie;
        _pool = pool;
        _addDummyPrefix = addDummyPrefix;
        _removeExtraWhitespaces = removeExtraWhitespaces;
        _escapeWhitespaces = escapeWhitespaces;
    }

    /// <summary>Reads <c>ModelProto.normalizer_spec</c> (field 3) of a serialized SentencePiece model.</summary>
    public static SentencePieceTextNormalizer FromModel(byte[] model, string path)
    {
        byte[] charsMap = [];
        bool addDummyPrefix = true, removeExtraWhitespaces = true, escapeWhitespaces = true;
        try
        {
            foreach (var (field, _, bytes) in ProtoFields(model))
            {
                if (field != 3 || bytes is null) continue;
                foreach (var (f, value, b) in ProtoFields(bytes))
                {
                    if (f == 2 && b is not null) charsMap = b;
                    else if (f == 3) addDummyPrefix = value != 0;
                    else if (f == 4) removeExtraWhitespaces = value != 0;
                    else if (f == 5) escapeWhitespaces = value != 0;
                }
            }
        }
        catch (IndexOutOfRangeException e)
        {
            throw new TokenizerFormatException(path, "truncated protobuf in the SentencePiece model", e);
        }
        if (charsMap.Length == 0) return new SentencePieceTextNormalizer([0], [], addDummyPrefix, removeExtraWhitespaces, escapeWhitespaces);
        if (charsMap.Length < 4) throw new TokenizerFormatException(path, "precompiled_charsmap is shorter than its header");
        uint trieBytes = BitConverter.ToUInt32(charsMap, 0);
        if (trieBytes % 4 != 0 || trieBytes == 0 || trieBytes > charsMap.Length - 4)
            throw new TokenizerFormatException(path, $"precompiled_charsmap trie size {trieBytes} does not fit the blob");
        var trie = new uint[trieBytes / 4];
        Buffer.BlockCopy(charsMap, 4, trie, 0, (int)trieBytes);
        var pool = charsMap[(4 + (int)trieBytes)..];
        return new SentencePieceTextNormalizer(trie, pool, addDummyPrefix, removeExtraWhitespaces, escapeWhitespaces);
    }

    public string Normalize(string text)
    {
        ReadOnlySpan<byte> input = Encoding.UTF8.GetBytes(text);
        var output = new List<byte>(input.Length + 3);
        if (_removeExtraWhitespaces)
            while (!input.IsEmpty)
            {
                int consumed = NormalizePrefix(input, out var replacement);
                if (!replacement.SequenceEqual(" "u8)) break;
                input = input[consumed..];
            }
        if (input.IsEmpty) return "";
        if (_addDummyPrefix) AppendSpace(output);

        bool isPrevSpace = _removeExtraWhitespaces;
        while (!input.IsEmpty)
        {
            int consumed = NormalizePrefix(input, out var sp);
            while (isPrevSpace && !sp.IsEmpty && sp[0] == ' ') sp = sp[1..];
            if (!sp.IsEmpty)
            {
                foreach (var b in sp)
                    if (b == ' ') AppendSpace(output);
                    else output.Add(b);
                isPrevSpace = sp[^1] == ' ';
            }
            input = input[consumed..];
            if (!_removeExtraWhitespaces) isPrevSpace = false;
        }
        if (_removeExtraWhitespaces)
        {
            var space = _escapeWhitespaces ? SpaceSymbol : " "u8.ToArray();
            while (output.Count >= space.Length && output.TakeLast(space.Length).SequenceEqual(space))
                output.RemoveRange(output.Count - space.Length, space.Length);
        }
        return Encoding.UTF8.GetString(output.ToArray());
    }

    private void AppendSpace(List<byte> output)
    {
        if (_escapeWhitespaces) output.AddRange(SpaceSymbol);
        else output.Add((byte)' ');
    }

    // The longest charsmap rule matching a prefix of the input (its replacement may be empty: a deletion), else one
    // UTF-8 character unchanged, else one malformed byte as U+FFFD.
    private int NormalizePrefix(ReadOnlySpan<byte> input, out ReadOnlySpan<byte> replacement)
    {
        int longestLength = 0, longestValue = 0;
        uint pos = 0;
        uint unit = _trie[0];
        pos ^= Offset(unit);
        for (int i = 0; i < input.Length; i++)
        {
            pos ^= input[i];
            if (pos >= _trie.Length) break;
            unit = _trie[pos];
            if ((unit & 0x800000FFu) != input[i]) break;
            pos ^= Offset(unit);
            if (((unit >> 8) & 1) != 0 && pos < _trie.Length)
            {
                longestLength = i + 1;
                longestValue = (int)(_trie[pos] & 0x7FFFFFFFu);
            }
        }
        if (longestLength > 0)
        {
            if (longestValue >= _pool.Length)
            {
                replacement = [];
                return longestLength;
            }
            int end = Array.IndexOf(_pool, (byte)0, longestValue);
            replacement = _pool.AsSpan(longestValue, (end < 0 ? _pool.Length : end) - longestValue);
            return longestLength;
        }
        int length = Utf8CharLength(input);
        replacement = length == 0 ? ReplacementChar : input[..length];
        return Math.Max(length, 1);
    }

    private static uint Offset(uint unit) => (unit >> 10) << (int)((unit & (1u << 9)) >> 6);

    // Length of the valid UTF-8 character at the start, 0 when malformed.
    private static int Utf8CharLength(ReadOnlySpan<byte> s)
    {
        int n = s[0] < 0x80 ? 1 : s[0] < 0xC0 ? 0 : s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : s[0] < 0xF8 ? 4 : 0;
        if (n == 0 || n > s.Length) return 0;
        return System.Text.Unicode.Utf8.IsValid(s[..n]) ? n : 0;
    }

    // Top-level fields of a protobuf message: (field number, varint value, bytes of a length-delimited field).
    private static IEnumerable<(int Field, ulong Value, byte[]? Bytes)> ProtoFields(byte[] message)
    {
        int i = 0;
        while (i < message.Length)
        {
            ulong key = ReadVarint(message, ref i);
            int field = (int)(key >> 3);
            switch ((int)(key & 7))
            {
                case 0: yield return (field, ReadVarint(message, ref i), null); break;
                case 1: i += 8; break;
                case 5: i += 4; break;
                case 2:
                    ulong length = ReadVarint(message, ref i);
                    if (length > (ulong)(message.Length - i)) throw new IndexOutOfRangeException("length-delimited field past the end");
                    yield return (field, 0, message[i..(i + (int)length)]);
                    i += (int)length;
                    break;
                default: throw new IndexOutOfRangeException($"unsupported protobuf wire type {key & 7}");
            }
        }
    }

    private static ulong ReadVarint(byte[] b, ref int i)
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            byte x = b[i++];
            value |= (ulong)(x & 0x7F) << shift;
            if (x < 0x80) return value;
        }
        throw new IndexOutOfRangeException("varint longer than 10 bytes");
    }
}
