namespace OmniConsistency.Inference.IO;

/// <summary>A checkpoint does not fit a module: every missing, unexpected and mis-shaped key, reported together.</summary>
public sealed class CheckpointMismatchException : Exception
{
    public CheckpointMismatchException(string source, string module, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected, IReadOnlyList<string> misShaped)
        : base(Describe(source, module, missing, unexpected, misShaped))
    {
        CheckpointSource = source;
        Missing = missing;
        Unexpected = unexpected;
        MisShaped = misShaped;
    }

    public string CheckpointSource { get; }
    public IReadOnlyList<string> Missing { get; }
    public IReadOnlyList<string> Unexpected { get; }
    public IReadOnlyList<string> MisShaped { get; }

    private static string Describe(string source, string module, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected, IReadOnlyList<string> misShaped)
    {
        static string List(string title, IReadOnlyList<string> keys) =>
            keys.Count == 0 ? "" : $"\n  {title} ({keys.Count}): {string.Join(", ", keys.Take(20))}{(keys.Count > 20 ? ", ..." : "")}";
        return $"Checkpoint '{source}' does not match {module}:" + List("missing", missing) + List("unexpected", unexpected) + List("wrong shape", misShaped);
    }
}
