using System.Reflection;
using TorchSharp;
using Xunit.Sdk;

namespace OmniConsistency.Inference.Tests.Golden;

/// <summary>
/// The single runner of the <c>manifest</c> kind. It checks the case against its manifest file
/// (<see cref="ManifestFile.Load"/>), then dispatches on (params.component, params.layout) to a checker:
/// a <c>public static void Method(GoldenCase)</c> of a class found by simple name anywhere in this test assembly.
/// Checkers live with the code they check (other branches), hence names resolved at run time rather than method
/// groups: a checker that has not landed yet makes its case skip, not the build fail.
/// A checker asserts itself (see <see cref="ManifestAssert"/>); the runner returns no tensors.
/// </summary>
[GoldenKind("manifest")]
public sealed class ManifestKind : IGoldenKindRunner
{
    /// <summary>(component, layout) → "Class.Method". When the class lacks that method, <c>CheckManifest(GoldenCase)</c> is used.</summary>
    public static readonly IReadOnlyDictionary<(string Component, string Layout), string> Checkers =
        new Dictionary<(string, string), string>
        {
            [("transformer", "diffusers")] = "FluxTransformerManifestCheck.CheckDiffusers",
            [("transformer", "bfl")] = "FluxTransformerManifestCheck.CheckBfl",
            [("vae", "diffusers")] = "VaeManifestCheck.CheckDiffusers",
            [("vae", "bfl")] = "VaeManifestCheck.CheckBfl",
            [("text_encoder", "transformers")] = "ClipTextManifestCheck.Check",
            [("text_encoder_2", "transformers")] = "T5EncoderManifestCheck.Check",
            [("consistency_lora", "omniconsistency")] = "ConsistencyLoraManifestCheck.Check",
        };

    public const string FallbackMethod = "CheckManifest";

    public IReadOnlyDictionary<string, torch.Tensor> Run(GoldenCase c)
    {
        var manifest = ManifestFile.Load(c);
        var key = (manifest.Component, manifest.Layout);
        if (!Checkers.TryGetValue(key, out var checker))
            throw new XunitException($"{c.Name}: no manifest checker is registered for component '{key.Component}', layout '{key.Layout}' (add one to ManifestKind.Checkers)");
        var method = Resolve(typeof(ManifestKind).Assembly, checker)
            ?? throw new GoldenCaseNotSupportedException($"manifest checker for {key.Component}/{key.Layout} not implemented yet ({checker})");
        // DoNotWrapExceptions: assertion failures and GoldenCaseNotSupportedException reach the harness as thrown.
        method.Invoke(null, BindingFlags.DoNotWrapExceptions, null, [c], null);
        return new Dictionary<string, torch.Tensor>();
    }

    /// <summary>
    /// The checker method named "Class.Method" in <paramref name="assembly"/>, or null when no class of that simple name
    /// exists. A class that exists but has neither the method nor <see cref="FallbackMethod"/>, or a name that several
    /// classes share, is a wiring error and fails.
    /// </summary>
    public static MethodInfo? Resolve(Assembly assembly, string checker)
    {
        int dot = checker.LastIndexOf('.');
        if (dot <= 0) throw new ArgumentException($"checker '{checker}' is not Class.Method", nameof(checker));
        string typeName = checker[..dot], methodName = checker[(dot + 1)..];
        var types = LoadableTypes(assembly).Where(t => t.Name == typeName).ToList();
        if (types.Count == 0) return null;
        if (types.Count > 1)
            throw new XunitException($"manifest checker class name '{typeName}' is ambiguous: {string.Join(", ", types.Select(t => t.FullName))}");
        var type = types[0];
        return Find(type, methodName) ?? Find(type, FallbackMethod)
            ?? throw new XunitException($"{type.FullName} has no public static void {methodName}(GoldenCase) (nor {FallbackMethod}(GoldenCase))");
    }

    private static MethodInfo? Find(Type type, string name)
    {
        var m = type.GetMethod(name, BindingFlags.Public | BindingFlags.Static, [typeof(GoldenCase)]);
        return m is not null && m.ReturnType == typeof(void) ? m : null;
    }

    private static IEnumerable<Type> LoadableTypes(Assembly assembly)
    {
        try { return assembly.GetTypes(); }
        catch (ReflectionTypeLoadException e) { return e.Types.OfType<Type>(); }
    }
}
