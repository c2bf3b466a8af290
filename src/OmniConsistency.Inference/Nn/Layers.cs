using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace OmniConsistency.Inference.Nn;

// Small layers of our own instead of TorchSharp's nn.Linear/Conv2d/...: those allocate and randomly initialise
// their weights on construction (48 GB of fp32 for FLUX.1-dev before loading), cannot be built on the meta
// device, and give no hook for run-time LoRA adapters. These create empty parameters through a ParameterFactory.

/// <summary>y = x·Wᵀ + b, with optional run-time low-rank adapters (see <see cref="ILinearAdapter"/>).</summary>
public sealed class Linear : nn.Module<Tensor, Tensor>
{
    public Parameter weight;
    public Parameter? bias;

    public Linear(long inFeatures, long outFeatures, ParameterFactory f, bool hasBias = true) : base(nameof(Linear))
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        weight = f.Create(outFeatures, inFeatures);
        bias = hasBias ? f.Create(outFeatures) : null;
        RegisterComponents();
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }

    /// <summary>Adapters applied on top of the base weight for the current generation; null when none.</summary>
    public ILinearAdapter? Adapter { get; set; }

    public override Tensor forward(Tensor x)
    {
        var y = F.linear(x, weight, bias);
        if (Adapter is null) return y;
        using var scope = NewDisposeScope();
        var delta = Adapter.Delta(x);
        if (delta is null) return y;
        return y.add_(delta.to(y.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>The base projection only, ignoring any adapter.</summary>
    public Tensor ForwardBase(Tensor x) => F.linear(x, weight, bias);
}

/// <summary>A run-time addition to a Linear's output (style LoRAs): returns the delta to add, or null.</summary>
public interface ILinearAdapter
{
    Tensor? Delta(Tensor input);
}

public sealed class Conv2d : nn.Module<Tensor, Tensor>
{
    public Parameter weight;
    public Parameter? bias;
    private readonly long _stride, _padding;

    public Conv2d(long inChannels, long outChannels, long kernel, ParameterFactory f, long stride = 1, long padding = 0, bool hasBias = true) : base(nameof(Conv2d))
    {
        weight = f.Create(outChannels, inChannels, kernel, kernel);
        bias = hasBias ? f.Create(outChannels) : null;
        _stride = stride;
        _padding = padding;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) =>
        F.conv2d(x, weight, bias, strides: [_stride, _stride], padding: [_padding, _padding]);
}

/// <summary>LayerNorm over the last dimension; with or without affine parameters.</summary>
public sealed class LayerNorm : nn.Module<Tensor, Tensor>
{
    public Parameter? weight;
    public Parameter? bias;
    private readonly long _dim;
    private readonly double _eps;

    public LayerNorm(long dim, ParameterFactory f, double eps = 1e-5, bool affine = true, bool hasBias = true) : base(nameof(LayerNorm))
    {
        _dim = dim;
        _eps = eps;
        weight = affine ? f.Create(dim) : null;
        bias = affine && hasBias ? f.Create(dim) : null;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => F.layer_norm(x, [_dim], weight, bias, _eps);
}

public sealed class GroupNorm : nn.Module<Tensor, Tensor>
{
    public Parameter weight;
    public Parameter bias;
    private readonly long _groups;
    private readonly double _eps;

    public GroupNorm(long groups, long channels, ParameterFactory f, double eps = 1e-6) : base(nameof(GroupNorm))
    {
        _groups = groups;
        _eps = eps;
        weight = f.Create(channels);
        bias = f.Create(channels);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => F.group_norm(x, _groups, weight, bias, _eps);
}

public sealed class Embedding : nn.Module<Tensor, Tensor>
{
    public Parameter weight;

    public Embedding(long count, long dim, ParameterFactory f) : base(nameof(Embedding))
    {
        weight = f.Create(count, dim);
        RegisterComponents();
    }

    public override Tensor forward(Tensor ids)
    {
        using var scope = NewDisposeScope();
        var shape = ids.shape.Append(weight.shape[1]).ToArray();
        return weight.index_select(0, ids.flatten().to(ScalarType.Int64)).view(shape).MoveToOuterDisposeScope();
    }
}

/// <summary>A module with no parameters that returns its input (placeholder for dropout slots in checkpoint names).</summary>
public sealed class Identity : nn.Module<Tensor, Tensor>
{
    public Identity() : base(nameof(Identity)) { }
    public override Tensor forward(Tensor x) => x.alias();
}
