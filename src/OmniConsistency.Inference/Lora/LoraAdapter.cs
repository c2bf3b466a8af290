using static TorchSharp.torch;

namespace OmniConsistency.Inference.Lora;

/// <summary>The layouts a LoRA file can come in (detected from its keys).</summary>
public enum LoraFormat
{
    /// <summary>diffusers / peft: <c>[transformer.]&lt;module&gt;.lora_A/lora_B.weight</c> (or <c>lora.down/up</c>), optional <c>.alpha</c>.</summary>
    Diffusers,
    /// <summary>kohya sd-scripts: <c>lora_unet_double_blocks_N_img_attn_qkv.lora_down/lora_up.weight</c> + <c>.alpha</c>.</summary>
    Kohya,
    /// <summary>XLabs: <c>double_blocks.N.processor.qkv_lora1.down.weight</c>, no alpha.</summary>
    XLabs,
    /// <summary>peft tensors in Black Forest Labs module naming: <c>diffusion_model.double_blocks.N.img_attn.qkv.lora_A.weight</c>.</summary>
    BflPeft,
}

/// <summary>Model components a LoRA can adapt.</summary>
public static class LoraComponent
{
    public const string Transformer = "transformer";
    /// <summary>CLIP-L (<c>text_encoder</c> in diffusers, <c>lora_te1_</c> in kohya).</summary>
    public const string TextEncoder = "text_encoder";
}

/// <summary>
/// One low-rank update of one Linear, in the internal form every file layout is converted to:
/// Δy = <see cref="Scale"/> · (B·(A·x) + BBias). Alphas folded into A/B by the source format (kohya) leave Scale = 1.
/// A may be shared between modules (a fused qkv LoRA has one A for q, k and v).
/// </summary>
public sealed record LoraModule(string Component, string Target, Tensor A, Tensor B, Tensor? BBias, double Scale)
{
    // Kept as plain numbers: attaching checks hundreds of modules per style switch, without native calls.
    public long Rank { get; } = A.shape[0];
    public long In { get; } = A.shape[1];
    public long Out { get; } = B.shape[0];
}

/// <summary>
/// A LoRA file converted once for one model (names and shapes validated) and one dtype/device. Immutable and
/// shareable between jobs; owned by whoever loaded it (usually <see cref="LoraAdapterCache"/>), which disposes it.
/// Every tensor owns its storage (no views into other tensors); a tensor shared by several modules (the A of a
/// fused qkv) is the same object in each, and is counted and disposed once.
/// </summary>
public sealed class LoraAdapter : IDisposable
{
    private readonly IReadOnlyList<Tensor> _tensors;
    private int _disposed;

    internal LoraAdapter(string source, IReadOnlySet<LoraFormat> formats, IReadOnlyList<LoraModule> modules,
        IReadOnlyList<string> unsupportedKeys, IReadOnlyList<string> warnings, string targetsFingerprint)
    {
        Source = source;
        Formats = formats;
        Modules = modules;
        UnsupportedKeys = unsupportedKeys;
        Warnings = warnings;
        TargetsFingerprint = targetsFingerprint;
        _tensors = DistinctTensors(modules);
        Bytes = _tensors.Sum(t => t.NumberOfElements * t.ElementSize);
        var first = modules.FirstOrDefault();
        DType = first?.A.dtype ?? ScalarType.Float32;
        Device = first?.A.device ?? CPU;
    }

    /// <summary>Where it came from (a file path).</summary>
    public string Source { get; }
    public IReadOnlySet<LoraFormat> Formats { get; }
    public IReadOnlyList<LoraModule> Modules { get; }
    /// <summary>Keys present in the file but not applied (text-encoder keys when no text encoder was given, T5 keys).</summary>
    public IReadOnlyList<string> UnsupportedKeys { get; }
    /// <summary>Human-readable notes for the job result (e.g. which keys were not applied and why).</summary>
    public IReadOnlyList<string> Warnings { get; }
    /// <summary>The <see cref="LoraTargetShapes.Fingerprint"/> of the model it was converted for.</summary>
    public string TargetsFingerprint { get; }
    public ScalarType DType { get; }
    public Device Device { get; }
    /// <summary>Memory held by its tensors (shared tensors counted once).</summary>
    public long Bytes { get; }
    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    public IEnumerable<LoraModule> ModulesOf(string component) => Modules.Where(m => m.Component == component);

    /// <summary>A copy of this adapter on another device (same dtype), e.g. a host-cached adapter uploaded to the GPU.</summary>
    public LoraAdapter CopyTo(Device device)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        var map = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        Tensor Copy(Tensor t)
        {
            if (!map.TryGetValue(t, out var c))
            {
                c = t.to(device, copy: true).DetachFromDisposeScope();
                map[t] = c;
            }
            return c;
        }
        var modules = Modules.Select(m => m with { A = Copy(m.A), B = Copy(m.B), BBias = m.BBias is null ? null : Copy(m.BBias) }).ToList();
        return new LoraAdapter(Source, Formats, modules, UnsupportedKeys, Warnings, TargetsFingerprint);
    }

    private static List<Tensor> DistinctTensors(IEnumerable<LoraModule> modules)
    {
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        var list = new List<Tensor>();
        foreach (var m in modules)
            foreach (var t in new[] { m.A, m.B, m.BBias })
                if (t is not null && seen.Add(t)) list.Add(t);
        return list;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var t in _tensors) t.Dispose();
    }
}
