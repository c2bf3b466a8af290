using static TorchSharp.torch;

namespace OmniConsistency.Inference.Flux;

/// <summary>RoPE tables for a sequence: cos and sin, each [S, head_dim] fp32, pairs on adjacent channels.</summary>
public sealed record RotaryTable(Tensor Cos, Tensor Sin)
{
    public long Length => Cos.shape[0];
}

/// <summary>
/// diffusers FluxPosEmbed + apply_rotary_emb. Angles pos·θ^(−2k/d) per axis in float64 (as diffusers on CPU/CUDA),
/// each cos/sin value repeated twice ([c0,c0,c1,c1,…]), cast to fp32, axes concatenated. Applied to q/k in fp32 and
/// cast back to their dtype.
/// </summary>
public static class FluxRotaryEmbedding
{
    /// <param name="ids">[S, axes] position ids (any float dtype; read as fp32 like diffusers' <c>ids.float()</c>).</param>
    public static RotaryTable Table(Tensor ids, IReadOnlyList<int> axesDims, double theta)
    {
        if (ids.ndim != 2 || ids.shape[1] != axesDims.Count)
            throw new ArgumentException($"Position ids must be [S, {axesDims.Count}], got [{string.Join(",", ids.shape)}].");
        using var scope = NewDisposeScope();
        var pos = ids.to(ScalarType.Float32);
        var cosParts = new List<Tensor>();
        var sinParts = new List<Tensor>();
        for (int axis = 0; axis < axesDims.Count; axis++)
        {
            int dim = axesDims[axis];
            var exponents = arange(0, dim, 2, dtype: ScalarType.Float64, device: ids.device) / (double)dim;
            var freqs = pow(theta, exponents).reciprocal();
            var angles = outer(pos[.., axis].to(ScalarType.Float64), freqs);
            cosParts.Add(angles.cos().repeat_interleave(2, dim: 1).to(ScalarType.Float32));
            sinParts.Add(angles.sin().repeat_interleave(2, dim: 1).to(ScalarType.Float32));
        }
        var cosT = cat(cosParts, 1).MoveToOuterDisposeScope();
        var sinT = cat(sinParts, 1).MoveToOuterDisposeScope();
        return new RotaryTable(cosT, sinT);
    }

    /// <summary>Rotates x [B, H, S, D] with a table of S rows: out = x·cos + (−x1, x0, −x3, x2, …)·sin, in fp32.</summary>
    public static Tensor Apply(Tensor x, RotaryTable table)
    {
        if (x.shape[2] != table.Length)
            throw new ArgumentException($"RoPE table has {table.Length} positions but the tensor has {x.shape[2]}.");
        using var scope = NewDisposeScope();
        var pairs = x.reshape([.. x.shape[..^1], -1, 2]);
        var real = pairs.select(-1, 0);
        var imag = pairs.select(-1, 1);
        var rotated = stack([imag.neg(), real], -1).flatten(3);
        var result = x.to(ScalarType.Float32) * table.Cos + rotated.to(ScalarType.Float32) * table.Sin;
        return result.to(x.dtype).MoveToOuterDisposeScope();
    }
}
