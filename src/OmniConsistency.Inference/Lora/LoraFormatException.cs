namespace OmniConsistency.Inference.Lora;

/// <summary>
/// A LoRA file cannot be used with the loaded model: unreadable or truncated, an unknown layout, keys that match no
/// module, or shapes that do not fit. <see cref="OffendingKeys"/> lists every problem key with its reason, all at once
/// (a file is never half-applied and never silently ignored).
/// </summary>
public sealed class LoraFormatException : Exception
{
    public LoraFormatException(string source, string problem, IReadOnlyList<string>? offendingKeys = null, Exception? inner = null)
        : base(Describe(source, problem, offendingKeys ?? []), inner)
    {
        Source = source;
        Problem = problem;
        OffendingKeys = offendingKeys ?? [];
    }

    /// <summary>The file (or name) the LoRA came from.</summary>
    public new string Source { get; }
    public string Problem { get; }
    /// <summary>"key: reason" for every key that could not be used.</summary>
    public IReadOnlyList<string> OffendingKeys { get; }

    private static string Describe(string source, string problem, IReadOnlyList<string> keys)
    {
        var text = $"LoRA '{source}' cannot be used: {problem}";
        if (keys.Count == 0) return text;
        const int shown = 30;
        return text + $"\n  offending keys ({keys.Count}):\n    " + string.Join("\n    ", keys.Take(shown)) + (keys.Count > shown ? $"\n    ... and {keys.Count - shown} more" : "");
    }
}
