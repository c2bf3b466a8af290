using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Lora;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Lora;

public class LoraApplicationTests
{
    private const long D = 8;
    private static readonly Dictionary<string, LinearShape> Shapes = FluxLinearShapes.For(D, 1, 1, inChannels: 16, joint: 8, pooled: 8);

    private static string WritePeft(TempFolder dir, string name, long seed, long rank, float? alpha, params string[] modules)
    {
        var g = new Generator((ulong)seed);
        var t = new Dictionary<string, Tensor>();
        foreach (var m in modules)
        {
            t[$"transformer.{m}.lora_A.weight"] = randn([rank, Shapes[m].In], generator: g);
            t[$"transformer.{m}.lora_B.weight"] = randn([Shapes[m].Out, rank], generator: g);
            if (alpha is { } a) t[$"transformer.{m}.alpha"] = tensor(a);
        }
        var path = dir.File(name);
        SafetensorsWriter.Save(path, t);
        return path;
    }

    private static Tensor Out(LinearTree model, string module, Tensor x) => model.Linears[module].forward(x);

    [Fact]
    public void RunTimeAdaptersAddTheWeightedSumAndDetachRestoresExactly()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        using var model = new LinearTree(Shapes);
        var targets = new LoraTargetModules(model);
        var lt = new LoraModelTargets(targets.Shapes);
        string[] mods = ["transformer_blocks.0.attn.to_q", "single_transformer_blocks.0.proj_out"];
        using var a1 = LoraLoader.Load(WritePeft(dir, "a.safetensors", 1, 4, 6f, mods), lt, ScalarType.Float32, CPU);
        using var a2 = LoraLoader.Load(WritePeft(dir, "b.safetensors", 2, 2, null, mods[0]), lt, ScalarType.Float32, CPU);
        var x = randn([2, 5, D], generator: new Generator(3));
        var baseQ = Out(model, mods[0], x).clone();

        var set = new LoraAdapterSet(loraScale: 1.3).Add(a1, 0.7).Add(a2, -0.4);
        using (var attached = set.Attach(targets))
        {
            Assert.Equal(2, attached.ModuleCount);
            var expected = baseQ.to(ScalarType.Float64);
            foreach (var (adapter, w) in new[] { (a1, 0.7), (a2, -0.4) })
            {
                var m = adapter.Modules.Single(m => m.Target == mods[0]);
                expected += x.to(ScalarType.Float64).matmul(m.A.T.to(ScalarType.Float64)).matmul(m.B.T.to(ScalarType.Float64)) * (w * 1.3 * m.Scale);
            }
            var got = Out(model, mods[0], x);
            Assert.True((got.to(ScalarType.Float64) - expected).abs().max().item<double>() < 1e-4);
            Assert.Throws<InvalidOperationException>(() => set.Attach(targets)); // one attachment per model
        }
        Assert.True(Out(model, mods[0], x).eq(baseQ).all().item<bool>());
        Assert.All(model.Linears.Values, l => Assert.Null(l.Adapter));
    }

    [Fact]
    public void MergedMatchesRunTimeAndRestoresWeightsBitForBit()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        using var model = new LinearTree(Shapes);
        var targets = new LoraTargetModules(model);
        var lt = new LoraModelTargets(targets.Shapes);
        var all = Shapes.Keys.ToArray();
        using var a1 = LoraLoader.Load(WritePeft(dir, "a.safetensors", 4, 4, 2f, all), lt, ScalarType.Float32, CPU);
        using var a2 = LoraLoader.Load(WritePeft(dir, "b.safetensors", 5, 3, null, all[..5]), lt, ScalarType.Float32, CPU);
        var before = model.Linears.ToDictionary(kv => kv.Key, kv => kv.Value.weight.clone());
        var set = new LoraAdapterSet(0.8).Add(a1, 1.0).Add(a2, -0.5);
        var xs = all.ToDictionary(m => m, m => randn([3, Shapes[m].In], generator: new Generator(6)));

        Dictionary<string, Tensor> runtime;
        using (set.Attach(targets)) runtime = all.ToDictionary(m => m, m => Out(model, m, xs[m]));
        using (var merged = set.Merge(targets))
        {
            Assert.Equal(all.Length, merged.ModuleCount);
            Assert.Equal(before.Values.Sum(w => w.NumberOfElements * 4), merged.BackupBytes);
            Assert.Equal(merged.BackupBytes, set.MergeBackupBytes(targets));
            foreach (var m in all)
                Assert.True((Out(model, m, xs[m]) - runtime[m]).abs().max().item<float>() < 1e-4, m);
        }
        foreach (var (name, w) in before) Assert.True(model.Linears[name].weight.eq(w).all().item<bool>(), name);
    }

    [Fact]
    public void ZeroWeightAddsNothingAndMismatchesAreRefused()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        using var model = new LinearTree(Shapes);
        var targets = new LoraTargetModules(model);
        var path = WritePeft(dir, "a.safetensors", 7, 2, null, "proj_out");
        using var a = LoraLoader.Load(path, new LoraModelTargets(targets.Shapes), ScalarType.Float32, CPU);
        using (var none = new LoraAdapterSet().Add(a, 0.0).Attach(targets)) Assert.Equal(0, none.ModuleCount);

        using var bf16 = LoraLoader.Load(path, new LoraModelTargets(targets.Shapes), ScalarType.BFloat16, CPU);
        Assert.Throws<InvalidOperationException>(() => new LoraAdapterSet().Add(bf16).Attach(targets));

        using var other = new LinearTree(FluxLinearShapes.For(12, 1, 1));
        Assert.Throws<InvalidOperationException>(() => new LoraAdapterSet().Add(a).Attach(new LoraTargetModules(other)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoraAdapterSet().Add(a, double.NaN));
    }

    [Fact]
    public void Bf16AdaptersComputeInTheModelDtype()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        using var model = new LinearTree(Shapes, ScalarType.BFloat16);
        var targets = new LoraTargetModules(model);
        using var a = LoraLoader.Load(WritePeft(dir, "a.safetensors", 8, 4, 4f, "x_embedder"), new LoraModelTargets(targets.Shapes), ScalarType.BFloat16, CPU);
        Assert.Equal(ScalarType.BFloat16, a.DType);
        var x = randn([4, 16], generator: new Generator(9)).to(ScalarType.BFloat16);
        var baseY = Out(model, "x_embedder", x).clone();
        using (new LoraAdapterSet().Add(a).Attach(targets))
        {
            var y = Out(model, "x_embedder", x);
            Assert.Equal(ScalarType.BFloat16, y.dtype);
            var m = a.Modules[0];
            var expected = baseY.to(ScalarType.Float32) + x.to(ScalarType.Float32).matmul(m.A.T.to(ScalarType.Float32)).matmul(m.B.T.to(ScalarType.Float32));
            Assert.True((y.to(ScalarType.Float32) - expected).abs().max().item<float>() < 0.25);
        }
        Assert.True(Out(model, "x_embedder", x).eq(baseY).all().item<bool>());
    }

    [Fact]
    public void PolicyMergesLongGenerationsWhoseBackupFits()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        using var model = new LinearTree(Shapes);
        var targets = new LoraTargetModules(model);
        using var a = LoraLoader.Load(WritePeft(dir, "a.safetensors", 10, 2, null, "proj_out", "x_embedder"), new LoraModelTargets(targets.Shapes), ScalarType.Float32, CPU);
        var set = new LoraAdapterSet().Add(a);
        long backup = set.MergeBackupBytes(targets);
        Assert.Equal((16 * 8 + 8 * 16) * 4, backup);
        var policy = new LoraApplicationPolicy { MinForwardPassesToMerge = 4, MergeBackupBudgetBytes = backup };
        Assert.Equal(LoraApplication.Merged, policy.Choose(set, targets, 26));
        Assert.Equal(LoraApplication.RunTime, policy.Choose(set, targets, 3));
        Assert.Equal(LoraApplication.RunTime, (policy with { MergeBackupBudgetBytes = backup - 1 }).Choose(set, targets, 26));
        Assert.Equal(LoraApplication.RunTime, policy.Choose(new LoraAdapterSet(), targets, 26));
        using (set.Apply(policy.Choose(set, targets, 26), targets)) Assert.All(model.Linears.Values, l => Assert.Null(l.Adapter));
    }
}
