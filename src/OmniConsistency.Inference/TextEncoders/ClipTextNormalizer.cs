using System.Globalization;
using System.Text;

namespace OmniConsistency.Inference.TextEncoders;

/// <summary>
/// The text steps of transformers' slow <c>CLIPTokenizer</c> when ftfy is not installed (the reference setup), before
/// BPE: <c>BasicTokenizer(do_lower_case=True, strip_accents=False, do_split_on_punc=False)</c> and the pre-token regex.
/// Written by hand because they work on Unicode code points with Python's semantics (category tests, <c>str.lower()</c>
/// with final sigma, <c>str.split()</c>); .NET's Regex works on UTF-16 units and would split supplementary-plane
/// letters and digits differently. Unassigned and case properties follow Unicode 14 as the reference's Python 3.11 did
/// (<see cref="Unicode14"/>); letter / digit / space categories and case mappings come from .NET's newer tables, which
/// agree for every code point assigned in Unicode 14 (checked: ids equal a Python port's on all of planes 0-2 and 14).
/// </summary>
internal static class ClipTextNormalizer
{
    private static readonly string[] RegexLiterals = ["<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

    /// <summary>BasicTokenizer.tokenize(text) joined with single spaces, as CLIPTokenizer._tokenize does.</summary>
    public static string Clean(string text)
    {
        var sb = new StringBuilder(text.Length + 8);
        foreach (var r in text.EnumerateRunes())
        {
            int cp = r.Value;
            // Invalid UTF-16 (a lone surrogate) enumerates as U+FFFD and is dropped like Python's Cs code point.
            if (cp == 0 || cp == 0xFFFD || IsControl(r)) continue;
            if (IsBasicWhitespace(r)) sb.Append(' ');
            else if (IsCjkIdeograph(cp)) sb.Append(' ').Append(r.ToString()).Append(' ');
            else sb.Append(r.ToString());
        }
        var nfc = sb.ToString().Normalize(NormalizationForm.FormC);
        var lowered = PyText.SplitWhitespace(nfc).Select(PyLower);
        return string.Join(' ', PyText.SplitWhitespace(string.Join(' ', lowered)));
    }

    /// <summary>
    /// <c>re.findall</c> of <c>&lt;\|startoftext\|&gt;|&lt;\|endoftext\|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>
    /// (regex module, IGNORECASE), alternatives tried in order at each position.
    /// </summary>
    public static List<string> PreTokenize(string text) =>
        PreTokenizeSpans(text).Select(w => text.Substring(w.Start, w.Length)).ToList();

    /// <summary><see cref="PreTokenize"/> as (start, length) spans of <paramref name="text"/>.</summary>
    public static List<(int Start, int Length)> PreTokenizeSpans(string text)
    {
        var words = new List<(int Start, int Length)>();
        int i = 0;
        while (i < text.Length)
        {
            var literal = RegexLiterals.FirstOrDefault(l => MatchesIgnoreCase(text, i, l));
            if (literal is not null)
            {
                words.Add((i, literal.Length));
                i += literal.Length;
                continue;
            }
            var r = Rune.GetRuneAt(text, i);
            int start = i;
            if (IsLetter(r))
            {
                while (i < text.Length && IsLetter(Rune.GetRuneAt(text, i))) i += Rune.GetRuneAt(text, i).Utf16SequenceLength;
                words.Add((start, i - start));
            }
            else if (IsNumber(r))
            {
                i += r.Utf16SequenceLength;
                words.Add((start, i - start));
            }
            else if (!IsRegexSpace(r.Value) && !IsUnmatched(r))
            {
                while (i < text.Length && Rune.GetRuneAt(text, i) is var o && !IsRegexSpace(o.Value) && !IsLetter(o) && !IsNumber(o) && !IsUnmatched(o))
                    i += o.Utf16SequenceLength;
                words.Add((start, i - start));
            }
            else i += r.Utf16SequenceLength;
        }
        return words;
    }

    /// <summary>Python's <c>str.lower()</c>: full lowercase mapping (İ → i + U+0307) and the Final_Sigma rule.</summary>
    public static string PyLower(string s)
    {
        var runes = s.EnumerateRunes().ToArray();
        var sb = new StringBuilder(s.Length);
        for (int k = 0; k < runes.Length; k++)
        {
            var r = runes[k];
            if (r.Value == 0x130) sb.Append("i\u0307");
            else if (r.Value == 0x3A3) sb.Append(IsFinalSigma(runes, k) ? 'ς' : 'σ');
            else sb.Append(Rune.ToLowerInvariant(r).ToString());
        }
        return sb.ToString();
    }

    // Final_Sigma: preceded by a cased letter (skipping case-ignorables) and not followed by one.
    private static bool IsFinalSigma(Rune[] runes, int k)
    {
        int j = k - 1;
        while (j >= 0 && IsCaseIgnorable(runes[j])) j--;
        if (j < 0 || !IsCased(runes[j])) return false;
        j = k + 1;
        while (j < runes.Length && IsCaseIgnorable(runes[j])) j++;
        return j == runes.Length || !IsCased(runes[j]);
    }

    private static bool IsCased(Rune r) => Unicode14.IsCased(r.Value);

    private static bool IsCaseIgnorable(Rune r) => Unicode14.IsCaseIgnorable(r.Value);

    // BasicTokenizer._is_control: category C* except \t \n \r; "unassigned" as of Unicode 14.
    private static bool IsControl(Rune r)
    {
        if (r.Value is '\t' or '\n' or '\r') return false;
        return Rune.GetUnicodeCategory(r) is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate
            or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned || Unicode14.IsUnassigned(r.Value);
    }

    // BasicTokenizer._is_whitespace: space, \t, \n, \r or category Zs.
    private static bool IsBasicWhitespace(Rune r) =>
        r.Value is ' ' or '\t' or '\n' or '\r' || Rune.GetUnicodeCategory(r) == UnicodeCategory.SpaceSeparator;

    // BasicTokenizer._is_chinese_char: the CJK Unified Ideographs blocks (not kana or hangul).
    private static bool IsCjkIdeograph(int cp) =>
        cp is (>= 0x4E00 and <= 0x9FFF) or (>= 0x3400 and <= 0x4DBF) or (>= 0x20000 and <= 0x2A6DF)
            or (>= 0x2A700 and <= 0x2B73F) or (>= 0x2B740 and <= 0x2B81F) or (>= 0x2B820 and <= 0x2CEAF)
            or (>= 0xF900 and <= 0xFAFF) or (>= 0x2F800 and <= 0x2FA1F);

    private static bool IsLetter(Rune r) => Rune.IsLetter(r);

    // Under IGNORECASE the regex module matches U+0345 (Mn, case-folds to ι) with none of the alternatives:
    // not [\p{L}], and not the negated class either, so findall steps over it and the character is lost.
    private static bool IsUnmatched(Rune r) => r.Value == 0x345;

    private static bool IsNumber(Rune r) => Rune.GetUnicodeCategory(r) is UnicodeCategory.DecimalDigitNumber
        or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber;

    // The regex module's \s: the Unicode White_Space property.
    private static bool IsRegexSpace(int cp) => cp is (>= 0x09 and <= 0x0D) or 0x20 or 0x85 or 0xA0 or 0x1680
        or (>= 0x2000 and <= 0x200A) or 0x2028 or 0x2029 or 0x202F or 0x205F or 0x3000;

    // Case-insensitive literal match as the regex module does it (simple case folding; ſ folds to s).
    private static bool MatchesIgnoreCase(string text, int at, string literal)
    {
        if (at + literal.Length > text.Length) return false;
        for (int k = 0; k < literal.Length; k++)
        {
            char c = text[at + k], l = literal[k];
            if (c == l || char.ToLowerInvariant(c) == l || (l == 's' && c == '\u017F')) continue;
            return false;
        }
        return true;
    }
}
