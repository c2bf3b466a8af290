using System.Text.Json;
using OmniConsistency.Inference.IO;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.IO;

public class SafetensorsCheckpointTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static string Index(Dictionary<string, string> weightMap, long totalSize = 0) =>
        JsonSerializer.Serialize(new { metadata = new { total_size = totalSize }, weight_map = weightMap });

    /// <summary>A Hugging Face style sharded folder: keys split over two shards plus the index.</summary>
    private (string Folder, Dictionary<string, Tensor> Tensors) ShardedFolder(string name = "model")
    {
        var folder = Directory.CreateDirectory(Path.Combine(_dir.Path, name)).FullName;
        var gen = new Generator(42);
        var first = new Dictionary<string, Tensor> { ["a.weight"] = randn([3, 4], generator: gen), ["a.bias"] = randn([3], generator: gen) };
        var second = new Dictionary<string, Tensor> { ["b.weight"] = randn([2, 3], ScalarType.BFloat16, generator: gen), ["b.scale"] = randn([], generator: gen) };
        SafetensorsWriter.Save(Path.Combine(folder, "model-00001-of-00002.safetensors"), first);
        SafetensorsWriter.Save(Path.Combine(folder, "model-00002-of-00002.safetensors"), second);
        var map = first.Keys.ToDictionary(k => k, _ => "model-00001-of-00002.safetensors");
        foreach (var k in second.Keys) map[k] = "model-00002-of-00002.safetensors";
        File.WriteAllText(Path.Combine(folder, "model.safetensors.index.json"), Index(map));
        return (folder, first.Concat(second).ToDictionary());
    }

    [Fact]
    public void ShardedFolderResolvesEveryKeyToItsShard()
    {
        using var scope = NewDisposeScope();
        var (folder, tensors) = ShardedFolder();
        foreach (var source in new[] { folder, Path.Combine(folder, "model.safetensors.index.json") })
        {
            using var ckpt = SafetensorsCheckpoint.Open(source);
            Assert.Equal(2, ckpt.Files.Count);
            Assert.Equal(tensors.Keys.Order(), ckpt.Keys.Order());
            foreach (var (key, t) in tensors)
            {
                Assert.Equal(t.shape, ckpt.Info(key).Shape);
                Assert.True(ckpt.Load(key).eq(t).all().item<bool>(), key);
                var f32 = ckpt.Load(key, ScalarType.Float32);
                Assert.True(f32.eq(t.to(ScalarType.Float32)).all().item<bool>(), key);
            }
            Assert.EndsWith("00002.safetensors", ckpt.Files.Single(f => f.Contains("b.weight")).FilePath);
            Assert.Equal(ckpt.Files.Sum(f => new FileInfo(f.FilePath).Length), ckpt.TotalBytes);
            var e = Assert.Throws<SafetensorsFormatException>(() => ckpt.Load("nope"));
            Assert.Contains("no tensor named 'nope'", e.Message);
        }
    }

    [Fact]
    public void ModuleLoaderReadsThroughTheIndex()
    {
        using var scope = NewDisposeScope();
        var (folder, tensors) = ShardedFolder();
        using var ckpt = SafetensorsCheckpoint.Open(folder);
        var source = new CheckpointTensorSource(ckpt);
        var into = empty([2, 3], ScalarType.Float32);
        ((ITensorSource)source).LoadInto("b.weight", into);
        Assert.True(into.eq(tensors["b.weight"].to(ScalarType.Float32)).all().item<bool>());
    }

    [Fact]
    public void IndexPointingOutsideTheFolderIsRejected()
    {
        using var scope = NewDisposeScope();
        var (folder, _) = ShardedFolder();
        var outside = _dir.File("outside.safetensors");
        SafetensorsWriter.Save(outside, new Dictionary<string, Tensor> { ["a.weight"] = ones(3, 4) });
        foreach (var shard in new[] { "../outside.safetensors", outside, "sub/../../outside.safetensors" })
        {
            var index = Path.Combine(folder, "model.safetensors.index.json");
            File.WriteAllText(index, Index(new() { ["a.weight"] = shard }));
            var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(folder).Dispose());
            RawSafetensors.AssertNames(e, index, "outside the checkpoint folder");
            Assert.Contains(shard, e.Problem);
        }
    }

    [Fact]
    public void IndexNamingAShardThatLacksTheKeyIsRejected()
    {
        using var scope = NewDisposeScope();
        var (folder, _) = ShardedFolder();
        var index = Path.Combine(folder, "model.safetensors.index.json");
        File.WriteAllText(index, Index(new() { ["a.weight"] = "model-00001-of-00002.safetensors", ["b.weight"] = "model-00001-of-00002.safetensors" }));
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(folder).Dispose());
        RawSafetensors.AssertNames(e, Path.Combine(folder, "model-00001-of-00002.safetensors"), "'b.weight'");
    }

    [Fact]
    public void IndexNamingAMissingShardIsRejected()
    {
        using var scope = NewDisposeScope();
        var (folder, _) = ShardedFolder();
        File.WriteAllText(Path.Combine(folder, "model.safetensors.index.json"), Index(new() { ["a.weight"] = "model-00009-of-00009.safetensors" }));
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(folder).Dispose());
        RawSafetensors.AssertNames(e, Path.Combine(folder, "model-00009-of-00009.safetensors"), "not found");
    }

    [Theory]
    [InlineData("not json", "not valid JSON")]
    [InlineData("[]", "not a JSON object")]
    [InlineData("\"x\"", "not a JSON object")]
    [InlineData("{}", "no weight_map")]
    [InlineData("{\"weight_map\":[]}", "no weight_map")]
    [InlineData("{\"weight_map\":{\"a.weight\":3}}", "is not a file name")]
    public void MalformedIndexIsRejected(string json, string problem)
    {
        using var scope = NewDisposeScope();
        var (folder, _) = ShardedFolder();
        var index = Path.Combine(folder, "model.safetensors.index.json");
        File.WriteAllText(index, json);
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(folder).Dispose());
        RawSafetensors.AssertNames(e, index, problem);
    }

    [Fact]
    public void FolderChoicesAreExplicit()
    {
        using var scope = NewDisposeScope();
        var empty = Directory.CreateDirectory(_dir.File("empty")).FullName;
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(empty).Dispose());
        Assert.Contains("no .safetensors", e.Problem);

        var two = Directory.CreateDirectory(_dir.File("two")).FullName;
        SafetensorsWriter.Save(Path.Combine(two, "x.safetensors"), new Dictionary<string, Tensor> { ["x"] = ones(1) });
        SafetensorsWriter.Save(Path.Combine(two, "y.safetensors"), new Dictionary<string, Tensor> { ["y"] = ones(2) });
        e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(two).Dispose());
        Assert.Contains("2 .safetensors files", e.Problem);
        using (var y = SafetensorsCheckpoint.Open(two, "y.safetensors")) Assert.Equal(["y"], y.Keys);

        var single = Directory.CreateDirectory(_dir.File("single")).FullName;
        SafetensorsWriter.Save(Path.Combine(single, "only.safetensors"), new Dictionary<string, Tensor> { ["z"] = ones(3) });
        using (var z = SafetensorsCheckpoint.Open(single)) Assert.Equal(3, z.Info("z").ElementCount);

        var (sharded, _) = ShardedFolder("twoindexes");
        File.Copy(Path.Combine(sharded, "model.safetensors.index.json"), Path.Combine(sharded, "other.safetensors.index.json"));
        e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(sharded).Dispose());
        Assert.Contains("several index files", e.Problem);
    }

    [Fact]
    public void PrefixedSourceStripsThePrefix()
    {
        using var scope = NewDisposeScope();
        var path = _dir.File("comfy.safetensors");
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor>
        {
            ["model.diffusion_model.img_in.weight"] = ones(2, 3),
            ["vae.decoder.conv.weight"] = ones(1),
        });
        using var ckpt = SafetensorsCheckpoint.Open(path);
        var source = new CheckpointTensorSource(ckpt, "model.diffusion_model.");
        Assert.Equal(["img_in.weight"], source.Keys);
        Assert.Equal(new long[] { 2, 3 }, source.Shape("img_in.weight"));
        Assert.Equal(6f, source.Load("img_in.weight", ScalarType.Float32, CPU).sum().item<float>());
    }
}
