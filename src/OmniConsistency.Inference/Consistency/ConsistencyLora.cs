using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.IO;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace OmniConsistency.Inference.Consistency;

/// <summary>
/// One low-rank pair of the consistency LoRA: Δ = up(down(x)) with scale alpha/r = 1 (OmniConsistency sets
/// network_alpha = rank). As upstream, the input is cast to the weights' dtype and Δ back to the input's dtype.
/// </summary>
public sealed class LowRankPair(Tensor down, Tensor up) : IDisposable
{
    /// <summary>[r, in].</summary>
    public Tensor Down { get; } = down;
    /// <summary>[out, r].</summary>
    public Tensor Up { get; } = up;
    public long Rank => Down.shape[0];

    public Tensor Delta(Tensor x)
    {
        using var scope = NewDisposeScope();
        return F.linear(F.linear(x.to(Down.dtype), Down), Up).to(x.dtype).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        Down.Dispose();
        Up.Dispose();
    }
}

/// <summary>The consistency LoRA of one attention layer (processor).</summary>
public sealed class ConsistencyLoraLayer(string processorName, LowRankPair query, LowRankPair key, LowRankPair value, LowRankPair? projection) : IDisposable
{
    public string ProcessorName { get; } = processorName;
    public LowRankPair Query { get; } = query;
    public LowRankPair Key { get; } = key;
    public LowRankPair Value { get; } = value;

    /// <summary>
    /// Double blocks' <c>proj_loras</c>: loaded because the file has them, but never applied — upstream's
    /// MultiDoubleStreamBlockLoraProcessor creates and loads them and then calls <c>to_out[0]</c> without them
    /// (quirk Q8); applying them would change the outputs. Null for single blocks.
    /// </summary>
    public LowRankPair? Projection { get; } = projection;

    public LowRankPair For(QkvProjection which) => which switch
    {
        QkvProjection.Query => Query,
        QkvProjection.Key => Key,
        _ => Value,
    };

    public void Dispose()
    {
        Query.Dispose();
        Key.Dispose();
        Value.Dispose();
        Projection?.Dispose();
    }
}

/// <summary>
/// OmniConsistency's consistency LoRA (<c>OmniConsistency.safetensors</c>, the layout lora_helper.py reads):
/// <c>transformer_blocks.N.attn.processor.{q,k,v,proj}_loras.0.{down,up}.weight</c> and
/// <c>single_transformer_blocks.N.attn.processor.{q,k,v}_loras.0.{down,up}.weight</c>, down [r, D], up [D, r].
/// Layers are indexed like <see cref="IFluxAttentionExtension"/> layers. Immutable once loaded; share it freely.
/// </summary>
public sealed class ConsistencyLora : IDisposable
{
    private static readonly string[] DoubleProjections = ["q", "k", "v", "proj"];
    private static readonly string[] SingleProjections = ["q", "k", "v"];

    private ConsistencyLora(IReadOnlyList<ConsistencyLoraLayer> layers, int rank)
    {
        Layers = layers;
        Rank = rank;
    }

    public IReadOnlyList<ConsistencyLoraLayer> Layers { get; }

    /// <summary>The rank lora_helper reports: shape[0] of the first <c>*.down.weight</c> (in key order).</summary>
    public int Rank { get; }

    public ScalarType DType => Layers.Count > 0 ? Layers[0].Query.Down.dtype : ScalarType.Float32;

    /// <summary>
    /// Loads the file for a transformer of <paramref name="config"/>, on <paramref name="device"/>. With
    /// <paramref name="dtype"/> null the weights keep the file's dtype (upstream behaviour: the LoRA then computes in
    /// that dtype); give one to convert. Throws <see cref="CheckpointMismatchException"/> listing every missing,
    /// unexpected (fits no block) and mis-shaped key.
    /// </summary>
    public static ConsistencyLora Load(string path, FluxTransformerConfig config, Device device, ScalarType? dtype = null)
    {
        using var checkpoint = SafetensorsCheckpoint.Open(path);
        return Load(new CheckpointTensorSource(checkpoint), config, device,
            key => dtype ?? SafetensorsDTypes.NaturalType(checkpoint.Info(key).DType));
    }

    public static ConsistencyLora Load(ITensorSource source, FluxTransformerConfig config, Device device, ScalarType dtype) =>
        Load(source, config, device, _ => dtype);

    private static ConsistencyLora Load(ITensorSource source, FluxTransformerConfig config, Device device, Func<string, ScalarType> dtypeOf)
    {
        int rank = Validate(source, config);
        var layers = new List<ConsistencyLoraLayer>();
        try
        {
            for (int layer = 0; layer < config.TotalAttentionLayers; layer++)
            {
                var name = ProcessorName(config, layer);
                LowRankPair Pair(string p) => new(
                    source.Load($"{name}.{p}_loras.0.down.weight", dtypeOf($"{name}.{p}_loras.0.down.weight"), device).DetachFromDisposeScope(),
                    source.Load($"{name}.{p}_loras.0.up.weight", dtypeOf($"{name}.{p}_loras.0.up.weight"), device).DetachFromDisposeScope());
                layers.Add(new ConsistencyLoraLayer(name, Pair("q"), Pair("k"), Pair("v"), layer < config.NumLayers ? Pair("proj") : null));
            }
        }
        catch
        {
            foreach (var l in layers) l.Dispose();
            throw;
        }
        return new ConsistencyLora(layers, rank);
    }

    /// <summary>Checks names and shapes only (no data read) and returns the rank; throws <see cref="CheckpointMismatchException"/>.</summary>
    public static int Validate(ITensorSource source, FluxTransformerConfig config)
    {
        long dim = config.InnerDim;
        var expected = ExpectedKeys(config);
        var keys = source.Keys.ToHashSet(StringComparer.Ordinal);
        var missing = expected.Where(k => !keys.Contains(k)).Order(StringComparer.Ordinal).ToList();
        var unexpected = keys.Where(k => !expected.Contains(k)).Order(StringComparer.Ordinal).ToList();
        var misShaped = new List<string>();
        foreach (var down in expected.Where(k => k.EndsWith(".down.weight", StringComparison.Ordinal) && keys.Contains(k)).Order(StringComparer.Ordinal))
        {
            var up = down[..^".down.weight".Length] + ".up.weight";
            var ds = source.Shape(down);
            bool downOk = ds.Length == 2 && ds[0] >= 1 && ds[1] == dim;
            if (!downOk) misShaped.Add($"{down} ([{string.Join(",", ds)}], expected [r,{dim}])");
            if (!keys.Contains(up)) continue;
            var us = source.Shape(up);
            long r = downOk ? ds[0] : -1;
            if (us.Length != 2 || us[0] != dim || (downOk && us[1] != r) || us[1] < 1)
                misShaped.Add($"{up} ([{string.Join(",", us)}], expected [{dim},{(downOk ? r.ToString() : "r")}])");
        }
        if (missing.Count + unexpected.Count + misShaped.Count > 0)
            throw new CheckpointMismatchException(source.Description, $"the consistency LoRA of a FLUX transformer with {config.NumLayers} double and {config.NumSingleLayers} single blocks (D = {dim})",
                missing, unexpected, misShaped);
        var first = source.Keys.Where(k => k.EndsWith(".down.weight", StringComparison.Ordinal)).Order(StringComparer.Ordinal).FirstOrDefault();
        return first is null ? 0 : (int)source.Shape(first)[0];
    }

    /// <summary>Every key the file must hold for <paramref name="config"/>, with shapes for a given rank.</summary>
    public static IReadOnlyDictionary<string, long[]> ExpectedShapes(FluxTransformerConfig config, int rank) =>
        ExpectedKeys(config).ToDictionary(
            k => k,
            k => k.EndsWith(".down.weight", StringComparison.Ordinal) ? new long[] { rank, config.InnerDim } : [config.InnerDim, rank],
            StringComparer.Ordinal);

    private static HashSet<string> ExpectedKeys(FluxTransformerConfig config)
    {
        var keys = new HashSet<string>(StringComparer.Ordinal);
        for (int layer = 0; layer < config.TotalAttentionLayers; layer++)
            foreach (var p in layer < config.NumLayers ? DoubleProjections : SingleProjections)
            foreach (var part in new[] { "down", "up" })
                keys.Add($"{ProcessorName(config, layer)}.{p}_loras.0.{part}.weight");
        return keys;
    }

    private static string ProcessorName(FluxTransformerConfig config, int layer) => config.AttentionProcessorName(layer);

    public void Dispose()
    {
        foreach (var l in Layers) l.Dispose();
    }
}
