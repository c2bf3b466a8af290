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

/// <summary>Thrown by a runner for a case that needs a capability the port does not have (e.g. several condition
/// LoRAs); the case is reported skipped with the reason.</summary>
public sealed class GoldenCaseNotSupportedException(string reason) : Exception(reason);

public static class GoldenKinds
{
    public static IReadOnlyDictionary<string, Type> Runners { get; } = typeof(GoldenKinds).Assembly.GetTypes()
        .SelectMany(t => t.GetCustomAttributes<GoldenKindAttribute>().Select(a => (a.Kind, t)))
        .ToDictionary(x => x.Kind, x => x.t);
}
