namespace OmniConsistency.Inference.IO;

/// <summary>A safetensors file or sharded checkpoint is malformed or does not fit what was asked of it.</summary>
public sealed class SafetensorsFormatException : Exception
{
    public SafetensorsFormatException(string path, string problem, Exception? inner = null)
        : base($"Invalid safetensors file '{path}': {problem}", inner)
    {
        FilePath = path;
        Problem = problem;
    }

    public string FilePath { get; }
    public string Problem { get; }
}
