using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests;

public class ModuleNamingTests
{
    private sealed class Block : nn.Module<Tensor, Tensor>
    {
        public Linear to_q;
        public nn.Module<Tensor, Tensor> to_out;
        public LayerNorm norm;

        public Block(ParameterFactory f) : base("Block")
        {
            to_q = new Linear(4, 3, f);
            to_out = nn.ModuleList<nn.Module<Tensor, Tensor>>(new Linear(3, 4, f, hasBias: false), new Identity()) is var l ? new Seq(l) : null!;
            norm = new LayerNorm(4, f, affine: false);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => x;
    }

    private sealed class Seq : nn.Module<Tensor, Tensor>
    {
        public TorchSharp.Modules.ModuleList<nn.Module<Tensor, Tensor>> items;
        public Seq(TorchSharp.Modules.ModuleList<nn.Module<Tensor, Tensor>> l) : base("Seq") { items = l; RegisterComponents(); }
        public override Tensor forward(Tensor x) => x;
    }

    [Fact]
    public void ParameterNamesFollowFieldNames()
    {
        using var b = new Block(ParameterFactory.Cpu());
        var names = b.named_parameters().Select(p => p.name).OrderBy(n => n).ToArray();
        Assert.Equal(new[] { "to_out.items.0.weight", "to_q.bias", "to_q.weight" }, names);
    }

    [Fact]
    public void MetaModulesHaveShapesButNoStorage()
    {
        using var b = new Block(ParameterFactory.Meta());
        Assert.All(b.parameters(), p => Assert.Equal(DeviceType.META, p.device_type));
        Assert.Equal(new long[] { 3, 4 }, b.to_q.weight.shape);
    }

    [Fact]
    public void LoaderReportsEveryProblemTogether()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var path = Path.Combine(dir, "m.safetensors");
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor>
        {
            ["to_q.weight"] = ones(3, 5),
            ["extra"] = ones(1),
            ["to_out.items.0.weight"] = ones(4, 3),
        });
        using var ckpt = SafetensorsCheckpoint.Open(path);
        using var b = new Block(ParameterFactory.Cpu());
        var e = Assert.Throws<CheckpointMismatchException>(() => ModuleWeightLoader.Load(b, new CheckpointTensorSource(ckpt)));
        Assert.Equal(["to_q.bias"], e.Missing);
        Assert.Equal(["extra"], e.Unexpected);
        Assert.Single(e.MisShaped);
    }
}
