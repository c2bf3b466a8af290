using System.Reflection;

namespace OmniConsistency.Inference.BuiltIn;

/// <summary>
/// Files embedded in this assembly: the built-in model's configs and real CLIP/T5 tokenizer files
/// (<c>BuiltIn/&lt;relative path&gt;</c>) and FLUX.1-dev's transformer config (<c>Flux1Dev/transformer_config.json</c>).
/// </summary>
public static class EmbeddedAssets
{
    private const string BuiltInPrefix = "BuiltIn/";
    private const string Flux1DevTransformerConfigName = "Flux1Dev/transformer_config.json";
    private static readonly Assembly Assembly = typeof(EmbeddedAssets).Assembly;

    /// <summary>Relative paths ('/'-separated, e.g. <c>tokenizer/vocab.json</c>) of the built-in model's embedded files, sorted.</summary>
    public static IReadOnlyList<string> BuiltInFiles { get; } = Assembly.GetManifestResourceNames()
        .Select(n => n.Replace('\\', '/'))
        .Where(n => n.StartsWith(BuiltInPrefix, StringComparison.Ordinal))
        .Select(n => n[BuiltInPrefix.Length..])
        .Order(StringComparer.Ordinal)
        .ToList();

    /// <summary>The bytes of an embedded built-in file (<paramref name="relativePath"/> as listed in <see cref="BuiltInFiles"/>).</summary>
    public static byte[] ReadBuiltIn(string relativePath) => Read(BuiltInPrefix + relativePath);

    /// <summary>FLUX.1-dev's <c>transformer/config.json</c> (the published file; BFL single files carry no config).</summary>
    public static string Flux1DevTransformerConfigJson => System.Text.Encoding.UTF8.GetString(Read(Flux1DevTransformerConfigName));

    private static byte[] Read(string logicalName)
    {
        // Resource names keep the build machine's separator in RecursiveDir; accept either.
        using var stream = Assembly.GetManifestResourceStream(logicalName)
            ?? Assembly.GetManifestResourceStream(logicalName.Replace('/', '\\'))
            ?? throw new InvalidOperationException($"Embedded resource '{logicalName}' is missing from {Assembly.GetName().Name}.");
        using var ms = new MemoryStream();
        stream.CopyTo(ms);
        return ms.ToArray();
    }
}
