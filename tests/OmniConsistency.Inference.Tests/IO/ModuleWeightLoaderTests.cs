using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.IO;

public class ModuleWeightLoaderTests
{
    private sealed class TwoLayers : nn.Module<Tensor, Tensor>
    {
        public Linear first;
        public Linear second;

        public TwoLayers(ParameterFactory f) : base(nameof(TwoLayers))
        {
            first = new Linear(5, 4, f);
            second = new Linear(4, 3, f, hasBias: false);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => second.forward(first.forward(x));
    }

    [Theory]
    [InlineData(ScalarType.Float32, ScalarType.Float32)] // read straight into the parameters
    [InlineData(ScalarType.BFloat16, ScalarType.BFloat16)]
    [InlineData(ScalarType.BFloat16, ScalarType.Float32)] // converted on the way
    [InlineData(ScalarType.Float32, ScalarType.BFloat16)]
    public void LoadsEveryParameterInTheModuleDType(ScalarType stored, ScalarType module)
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        var gen = new Generator(9);
        var weights = new Dictionary<string, Tensor>
        {
            ["first.weight"] = randn([4, 5], stored, generator: gen),
            ["first.bias"] = randn([4], stored, generator: gen),
            ["second.weight"] = randn([3, 4], stored, generator: gen),
        };
        var path = dir.File("m.safetensors");
        SafetensorsWriter.Save(path, weights);
        using var ckpt = SafetensorsCheckpoint.Open(path);
        using var m = new TwoLayers(new ParameterFactory(module, CPU));
        ModuleWeightLoader.Load(m, new CheckpointTensorSource(ckpt));
        foreach (var (name, p) in m.named_parameters())
        {
            Assert.Equal(module, p.dtype);
            Assert.True(p.eq(weights[name].to(module)).all().item<bool>(), name);
        }
    }

    [Fact]
    public void MismatchIsReportedBeforeAnyWeightIsWritten()
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        var path = dir.File("m.safetensors");
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["first.weight"] = ones(4, 5), ["second.weight"] = ones(4, 3) });
        using var ckpt = SafetensorsCheckpoint.Open(path);
        using var m = new TwoLayers(ParameterFactory.Cpu());
        using (no_grad()) m.first.weight.fill_(7);
        var e = Assert.Throws<CheckpointMismatchException>(() => ModuleWeightLoader.Load(m, new CheckpointTensorSource(ckpt)));
        Assert.Equal(["first.bias"], e.Missing);
        Assert.Single(e.MisShaped);
        Assert.Contains("second.weight (checkpoint [4,3], model [3,4])", e.Message);
        Assert.Equal(7f, m.first.weight.mean().item<float>());
    }
}
