using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Nn;

/// <summary>
/// Where and in which dtype modules create their parameters. Parameters are created with <c>torch.empty</c>
/// (no random initialisation): weights always come from a checkpoint, so a 12B model built on CPU costs only
/// what loading writes, and built on the meta device costs nothing (used to check real checkpoint layouts).
/// </summary>
public sealed record ParameterFactory(ScalarType DType, Device Device)
{
    public static ParameterFactory Meta(ScalarType dtype = ScalarType.BFloat16) => new(dtype, new Device(DeviceType.META));
    public static ParameterFactory Cpu(ScalarType dtype = ScalarType.Float32) => new(dtype, CPU);

    public bool IsMeta => Device.type == DeviceType.META;

    public Parameter Create(params long[] shape)
    {
        var t = empty(shape, DType, Device);
        var p = new Parameter(t, requires_grad: false);
        // A module owns its parameters: without this, a model built inside a DisposeScope loses its weights
        // when that scope ends.
        p.DetachFromDisposeScope();
        return p;
    }
}
