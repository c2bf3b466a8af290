using System.Reflection;
using TorchSharp;

namespace OmniConsistency.Inference.Tests.Golden;

/// <summary>Marks a class that runs the golden cases of one kind. The class needs a public parameterless constructor.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = true)]
public sealed class GoldenKindAttribute(string kind) : Attribute
{
    public string Kind { get; } = kind;
}

/// <summary>Runs one case: returns the produced tensors (compared with expected.safetensors by the harness),
/// or asserts itself and returns an empty dictionary (kinds without tensors, such as manifests).</summary>
public interface IGoldenKindRunner
{
    IReadOnlyDictionary<string, torch.Tensor> Run(GoldenCase c);
}

/// <summary>Thrown by a runner for a case that needs a capability that has not landed yet; the case is reported skipped.</summary>
public sealed class GoldenCaseNotSupportedException(string reason) : Exception(reason);

public static class GoldenKinds
{
    /// <summary>Kinds the golden set is known to hold, with the issue that implements each. A case of a kind
    /// with no runner yet is skipped with this reason; a kind in neither list fails.</summary>
    public static readonly IReadOnlyDictionary<string, string> Known = new Dictionary<string, string>
    {
        ["scheduler"] = "Inference core I",
        ["transformer"] = "Inference core I",
        ["manifest"] = "Inference core I/II (module manifests)",
        ["tokenize_clip"] = "Inference core II",
        ["tokenize_t5"] = "Inference core II",
        ["clip_text"] = "Inference core II",
        ["t5_text"] = "Inference core II",
        ["encode_prompt"] = "Inference core II",
        ["vae_encode"] = "Inference core II",
        ["vae_decode"] = "Inference core II",
        ["style_lora"] = "Style LoRAs",
        ["omni_transformer"] = "OmniConsistency condition branch",
        ["pipeline_latents"] = "OmniConsistency condition branch",
        ["pipeline_e2e"] = "OmniConsistency condition branch",
    };

    public static IReadOnlyDictionary<string, Type> Runners { get; } = typeof(GoldenKinds).Assembly.GetTypes()
        .SelectMany(t => t.GetCustomAttributes<GoldenKindAttribute>().Select(a => (a.Kind, t)))
        .ToDictionary(x => x.Kind, x => x.t);
}
