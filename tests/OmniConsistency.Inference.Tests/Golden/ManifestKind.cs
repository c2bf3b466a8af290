using OmniConsistency.Inference.Tests.Consistency;
using OmniConsistency.Inference.Tests.Flux;
using OmniConsistency.Inference.Tests.TextEncoders;
using OmniConsistency.Inference.Tests.Vae;
using TorchSharp;
using Xunit.Sdk;

namespace OmniConsistency.Inference.Tests.Golden;

/// <summary>
/// The single runner of the <c>manifest</c> kind. It checks the case against its manifest file
/// (<see cref="ManifestFile.Load"/>), then dispatches on (params.component, params.layout) to the checker that lives
/// with the code it checks. A checker asserts itself (see <see cref="ManifestAssert"/>); the runner returns no tensors.
/// An unregistered (component, layout) fails.
/// </summary>
[GoldenKind("manifest")]
public sealed class ManifestKind : IGoldenKindRunner
{
    /// <summary>(component, layout) → the checker; one entry per manifest the golden set holds.</summary>
    public static readonly IReadOnlyDictionary<(string Component, string Layout), Action<GoldenCase>> Checkers =
        new Dictionary<(string, string), Action<GoldenCase>>
        {
            [("transformer", "diffusers")] = FluxTransformerManifestCheck.CheckDiffusers,
            [("transformer", "bfl")] = FluxTransformerManifestCheck.CheckBfl,
            [("vae", "diffusers")] = VaeManifestCheck.CheckDiffusers,
            [("vae", "bfl")] = VaeManifestCheck.CheckBfl,
            [("text_encoder", "transformers")] = ClipTextManifestCheck.Check,
            [("text_encoder_2", "transformers")] = T5EncoderManifestCheck.Check,
            [("consistency_lora", "omniconsistency")] = ConsistencyLoraManifestCheck.Check,
        };

    public IReadOnlyDictionary<string, torch.Tensor> Run(GoldenCase c)
    {
        var manifest = ManifestFile.Load(c);
        var key = (manifest.Component, manifest.Layout);
        if (!Checkers.TryGetValue(key, out var check))
            throw new XunitException($"{c.Name}: no manifest checker is registered for component '{key.Component}', layout '{key.Layout}' (add one to ManifestKind.Checkers)");
        check(c);
        return new Dictionary<string, torch.Tensor>();
    }
}
