using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Nn;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Lora;

/// <summary>Flux-transformer Linear names and shapes for any size (diffusers layout, spec §6.2), for tests that do not
/// need the real transformer.</summary>
public static class FluxLinearShapes
{
    public static Dictionary<string, LinearShape> For(long d, int doubles, int singles, long inChannels = 64, long joint = 32, long pooled = 32, long? mlp = null)
    {
        long m = mlp ?? 4 * d;
        var s = new Dictionary<string, LinearShape>(StringComparer.Ordinal)
        {
            ["x_embedder"] = new(inChannels, d),
            ["context_embedder"] = new(joint, d),
            ["time_text_embed.timestep_embedder.linear_1"] = new(256, d),
            ["time_text_embed.timestep_embedder.linear_2"] = new(d, d),
            ["time_text_embed.guidance_embedder.linear_1"] = new(256, d),
            ["time_text_embed.guidance_embedder.linear_2"] = new(d, d),
            ["time_text_embed.text_embedder.linear_1"] = new(pooled, d),
            ["time_text_embed.text_embedder.linear_2"] = new(d, d),
            ["norm_out.linear"] = new(d, 2 * d),
            ["proj_out"] = new(d, inChannels),
        };
        for (int n = 0; n < doubles; n++)
        {
            var p = $"transformer_blocks.{n}.";
            s[p + "norm1.linear"] = new(d, 6 * d);
            s[p + "norm1_context.linear"] = new(d, 6 * d);
            foreach (var q in new[] { "to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out" })
                s[p + "attn." + q] = new(d, d);
            foreach (var ff in new[] { "ff", "ff_context" })
            {
                s[$"{p}{ff}.net.0.proj"] = new(d, m);
                s[$"{p}{ff}.net.2"] = new(m, d);
            }
        }
        for (int n = 0; n < singles; n++)
        {
            var p = $"single_transformer_blocks.{n}.";
            s[p + "norm.linear"] = new(d, 3 * d);
            foreach (var q in new[] { "to_q", "to_k", "to_v" }) s[p + "attn." + q] = new(d, d);
            s[p + "proj_mlp"] = new(d, m);
            s[p + "proj_out"] = new(d + m, d);
        }
        return s;
    }

    /// <summary>The Linear shapes of a diffusers checkpoint: every 2-D "<name>.weight".</summary>
    public static LoraTargetShapes FromCheckpoint(string path)
    {
        using var f = SafetensorsFile.Open(path);
        return new LoraTargetShapes(f.Tensors.Values.Where(t => t.Name.EndsWith(".weight", StringComparison.Ordinal) && t.Shape.Length == 2)
            .Select(t => KeyValuePair.Create(t.Name[..^".weight".Length], new LinearShape(t.Shape[1], t.Shape[0]))));
    }
}

/// <summary>A module tree of <see cref="Linear"/> leaves at the given dotted names (random weights), so that
/// named_modules() gives exactly those names.</summary>
public sealed class LinearTree : nn.Module<Tensor, Tensor>
{
    public LinearTree(IReadOnlyDictionary<string, LinearShape> shapes, ScalarType dtype = ScalarType.Float32, long seed = 1) : base("LinearTree")
    {
        var f = new ParameterFactory(dtype, CPU);
        var gen = new Generator((ulong)seed);
        var nodes = new Dictionary<string, nn.Module>(StringComparer.Ordinal) { [""] = this };
        foreach (var (name, shape) in shapes.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var linear = new Linear(shape.In, shape.Out, f);
            using (no_grad())
            {
                linear.weight.copy_(rand(linear.weight.shape, generator: gen).mul_(2).sub_(1).div_(Math.Sqrt(shape.In)));
                linear.bias!.copy_(rand(linear.bias.shape, generator: gen).mul_(0.2).sub_(0.1));
            }
            Linears[name] = linear;
            var parts = name.Split('.');
            var parent = "";
            for (int i = 0; i < parts.Length - 1; i++)
            {
                var path = parent.Length == 0 ? parts[i] : parent + "." + parts[i];
                if (!nodes.ContainsKey(path))
                {
                    var node = new Node();
                    nodes[parent].register_module(parts[i], node);
                    nodes[path] = node;
                }
                parent = path;
            }
            nodes[parent].register_module(parts[^1], linear);
        }
    }

    public Dictionary<string, Linear> Linears { get; } = new(StringComparer.Ordinal);

    public override Tensor forward(Tensor x) => x;

    private sealed class Node() : nn.Module("Node");
}

/// <summary>Temporary folders removed after a test.</summary>
public sealed class TempFolder : IDisposable
{
    public TempFolder() => Path = Directory.CreateTempSubdirectory("lora-test-").FullName;
    public string Path { get; }
    public string File(string name) => System.IO.Path.Combine(Path, name);
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
