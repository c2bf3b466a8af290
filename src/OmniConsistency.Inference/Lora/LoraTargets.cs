using OmniConsistency.Inference.Nn;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Lora;

/// <summary>The shape of a Linear a LoRA can target: y[out] = W[out,in]·x[in].</summary>
public readonly record struct LinearShape(long In, long Out)
{
    public override string ToString() => $"[{Out},{In}]";
}

/// <summary>
/// The Linear modules of one model component a LoRA may target, by module name (diffusers / transformers names,
/// e.g. <c>transformer_blocks.0.attn.to_q</c>), with their shapes. This is all the converter needs to know about a
/// model: fused-module split sizes (kohya qkv, single-block linear1) come from the shapes of the parts, so any
/// model size works.
/// </summary>
public sealed class LoraTargetShapes
{
    private readonly Dictionary<string, LinearShape> _shapes;

    public LoraTargetShapes(IEnumerable<KeyValuePair<string, LinearShape>> shapes)
    {
        _shapes = new Dictionary<string, LinearShape>(StringComparer.Ordinal);
        foreach (var (name, shape) in shapes)
        {
            if (shape.In <= 0 || shape.Out <= 0) throw new ArgumentException($"Module '{name}' has an invalid shape {shape}.");
            if (!_shapes.TryAdd(name, shape)) throw new ArgumentException($"Module '{name}' is listed twice.");
        }
        var h = new HashCode();
        foreach (var (k, v) in _shapes.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            h.Add(k);
            h.Add(v.In);
            h.Add(v.Out);
        }
        Fingerprint = $"{_shapes.Count}:{h.ToHashCode():x8}";
    }

    /// <summary>Every <see cref="Linear"/> under <paramref name="module"/> (names as <c>named_modules()</c> gives them).</summary>
    public static LoraTargetShapes FromModule(nn.Module module) =>
        new(LinearsOf(module).Select(l => KeyValuePair.Create(l.Name, new LinearShape(l.Linear.InFeatures, l.Linear.OutFeatures))));

    internal static IEnumerable<(string Name, Linear Linear)> LinearsOf(nn.Module module) =>
        module.named_modules().Where(m => m.module is Linear && m.name.Length > 0).Select(m => (m.name, (Linear)m.module));

    public IReadOnlyDictionary<string, LinearShape> Shapes => _shapes;
    public int Count => _shapes.Count;
    public bool Contains(string name) => _shapes.ContainsKey(name);
    public bool TryGet(string name, out LinearShape shape) => _shapes.TryGetValue(name, out shape);

    /// <summary>A fingerprint of names and shapes: adapters converted for one fingerprint fit any model with it.</summary>
    public string Fingerprint { get; }
}

/// <summary>
/// The Linear modules of one model instance that adapters attach to, indexed once per model (walking the module
/// tree on every style switch would cost more than the switch itself).
/// </summary>
public sealed class LoraTargetModules
{
    private readonly Dictionary<string, Linear> _modules;

    public LoraTargetModules(nn.Module model)
    {
        _modules = LoraTargetShapes.LinearsOf(model).ToDictionary(l => l.Name, l => l.Linear, StringComparer.Ordinal);
        Shapes = new LoraTargetShapes(_modules.Select(kv => KeyValuePair.Create(kv.Key, new LinearShape(kv.Value.InFeatures, kv.Value.OutFeatures))));
        var first = _modules.Values.FirstOrDefault();
        DType = first?.weight.dtype ?? ScalarType.Float32;
        Device = first?.weight.device ?? CPU;
    }

    public LoraTargetShapes Shapes { get; }
    public ScalarType DType { get; }
    public Device Device { get; }
    public IReadOnlyDictionary<string, Linear> Modules => _modules;

    public bool TryGet(string name, out Linear linear) => _modules.TryGetValue(name, out linear!);
}
