using System.Text.Json;
using System.Text.Json.Nodes;
using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.TextEncoders;
using OmniConsistency.Inference.Tests.Golden;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.TextEncoders;

public class TextEncoderModelTests
{
    private static string Model(string component) => Path.Combine(GoldenRoot.Path, "models/tiny-flux", component);

    [Fact]
    public void RelativePositionBucketsFollowTheT5Formula()
    {
        long[] rel = [0, 1, -1, 7, -7, 8, -8, -12, 12, -127, -128, 200, -1000];
        // 16·[rel>0] + (|rel| < 8 ? |rel| : min(15, 8 + trunc(ln(|rel|/8) / ln(16) · 8)))
        long[] expected = [0, 17, 1, 23, 7, 24, 8, 9, 25, 15, 15, 31, 15];
        using var buckets = T5Attention.RelativePositionBucket(tensor(rel), 32, 128);
        Assert.Equal(expected, buckets.data<long>().ToArray());
    }

    [Fact]
    public void T5LayoutFollowsTheConfig()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var configPath = Path.Combine(dir, "config.json");
        File.WriteAllText(configPath, """{"d_model": 16, "d_kv": 4, "num_heads": 2, "d_ff": 24, "num_layers": 3, "feed_forward_proj": "relu"}""");
        var config = T5EncoderConfig.FromFile(configPath);
        Assert.False(config.IsGatedAct);
        Assert.Equal("relu", config.DenseActFn);
        using var model = new T5EncoderModel(config, ParameterFactory.Meta());
        var names = model.named_parameters().Select(p => p.name).ToHashSet();
        Assert.Contains("encoder.block.2.layer.1.DenseReluDense.wi.weight", names);
        Assert.DoesNotContain("encoder.block.2.layer.1.DenseReluDense.wi_0.weight", names);
        Assert.Contains("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", names);
        Assert.DoesNotContain("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight", names);
        Assert.DoesNotContain("encoder.embed_tokens.weight", names);
        Assert.Equal(new long[] { 8, 16 }, model.named_parameters().Single(p => p.name == "encoder.block.1.layer.0.SelfAttention.q.weight").parameter.shape);

        File.WriteAllText(configPath, """{"feed_forward_proj": "gated-gelu"}""");
        var gated = T5EncoderConfig.FromFile(configPath);
        Assert.True(gated.IsGatedAct);
        Assert.Equal("gelu_new", gated.DenseActFn);
        File.WriteAllText(configPath, """{"feed_forward_proj": "gated-silu", "dense_act_fn": "gelu"}""");
        Assert.Equal("gelu", T5EncoderConfig.FromFile(configPath).DenseActFn);
        File.WriteAllText(configPath, """{"feed_forward_proj": "gated-mish"}""");
        Assert.Throws<ModelConfigException>(() => T5EncoderConfig.FromFile(configPath));
        File.WriteAllText(configPath, """{"hidden_size": 10, "num_attention_heads": 3}""");
        Assert.Throws<ModelConfigException>(() => ClipTextConfig.FromFile(configPath));
    }

    [Fact]
    public void ShardedCheckpointWithStoredTiedEmbeddingLoadsLikeTheSingleFile()
    {
        using var scope = NewDisposeScope();
        var dir = Directory.CreateTempSubdirectory().FullName;
        File.Copy(Path.Combine(Model("text_encoder_2"), "config.json"), Path.Combine(dir, "config.json"));
        using (var ckpt = SafetensorsCheckpoint.Open(Model("text_encoder_2")))
        {
            var keys = ckpt.Keys.Order(StringComparer.Ordinal).ToList();
            var first = keys.Take(keys.Count / 2).ToDictionary(k => k, k => ckpt.Load(k));
            var second = keys.Skip(keys.Count / 2).ToDictionary(k => k, k => ckpt.Load(k));
            second["encoder.embed_tokens.weight"] = ckpt.Load("shared.weight"); // older files store the tied copy
            SafetensorsWriter.Save(Path.Combine(dir, "model-00001-of-00002.safetensors"), first);
            SafetensorsWriter.Save(Path.Combine(dir, "model-00002-of-00002.safetensors"), second);
            var map = new JsonObject();
            foreach (var k in first.Keys) map[k] = "model-00001-of-00002.safetensors";
            foreach (var k in second.Keys) map[k] = "model-00002-of-00002.safetensors";
            File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), new JsonObject { ["weight_map"] = map }.ToJsonString());
        }
        var ids = randint(0, 32128, [2, 19], dtype: ScalarType.Int64, generator: new Generator(3));
        using var single = T5EncoderModel.FromPretrained(Model("text_encoder_2"), ParameterFactory.Cpu());
        using var sharded = T5EncoderModel.FromPretrained(dir, ParameterFactory.Cpu());
        Assert.True(single.forward(ids).eq(sharded.forward(ids)).all().item<bool>());
    }

    [Fact]
    public void StrictLoadingReportsMissingWeights()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        File.Copy(Path.Combine(Model("text_encoder"), "config.json"), Path.Combine(dir, "config.json"));
        using (var ckpt = SafetensorsCheckpoint.Open(Model("text_encoder")))
            SafetensorsWriter.Save(Path.Combine(dir, "model.safetensors"),
                ckpt.Keys.Where(k => k != "text_model.final_layer_norm.bias").ToDictionary(k => k, k => ckpt.Load(k)));
        var e = Assert.Throws<CheckpointMismatchException>(() => ClipTextModel.FromPretrained(dir, ParameterFactory.Cpu()));
        Assert.Equal(["text_model.final_layer_norm.bias"], e.Missing);
    }

    [Fact]
    public void ClipPoolsAtTheFirstEosIdWhenTheConfigHasANonLegacyEos()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(Model("text_encoder"), "config.json")))!;
        config["eos_token_id"] = 320;
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        File.Copy(Path.Combine(Model("text_encoder"), "model.safetensors"), Path.Combine(dir, "model.safetensors"));

        using var scope = NewDisposeScope();
        var ids = tensor(new long[] { 49406, 5, 320, 7, 49407, 320, 49407, 49407, 49406, 49407, 8, 9, 10, 11, 12, 320 }, [2, 8]);
        using var legacy = ClipTextModel.FromPretrained(Model("text_encoder"), ParameterFactory.Cpu());
        using var modern = ClipTextModel.FromPretrained(dir, ParameterFactory.Cpu());
        using var a = legacy.forward(ids);
        using var b = modern.forward(ids);
        Assert.True(a.LastHiddenState.eq(b.LastHiddenState).all().item<bool>());
        // legacy: argmax(ids) = first 49407 (row 0 → 4, row 1 → 1); modern: first 320 (row 0 → 2, row 1 → 7)
        Assert.True(a.PooledOutput[0].eq(a.LastHiddenState[0, 4]).all().item<bool>());
        Assert.True(a.PooledOutput[1].eq(a.LastHiddenState[1, 1]).all().item<bool>());
        Assert.True(b.PooledOutput[0].eq(b.LastHiddenState[0, 2]).all().item<bool>());
        Assert.True(b.PooledOutput[1].eq(b.LastHiddenState[1, 7]).all().item<bool>());
    }

    [Fact]
    public void BadInputIdsAreRejected()
    {
        using var scope = NewDisposeScope();
        using var clip = ClipTextModel.FromPretrained(Model("text_encoder"), ParameterFactory.Cpu());
        using var t5 = T5EncoderModel.FromPretrained(Model("text_encoder_2"), ParameterFactory.Cpu());
        Assert.Throws<ArgumentException>(() => clip.forward(zeros([1, 78], ScalarType.Int64)));
        Assert.Throws<ArgumentOutOfRangeException>(() => clip.forward(full([1, 4], 49408L, ScalarType.Int64)));
        Assert.Throws<ArgumentOutOfRangeException>(() => t5.forward(full([1, 4], -1L, ScalarType.Int64)));
        Assert.Throws<ArgumentException>(() => t5.forward(zeros([4], ScalarType.Int64)));
    }

    [Fact]
    public void Bf16EncodersTrackFp32AndStayBf16()
    {
        using var scope = NewDisposeScope();
        var ids = randint(0, 32128, [2, 40], dtype: ScalarType.Int64, generator: new Generator(5));
        using var t5 = T5EncoderModel.FromPretrained(Model("text_encoder_2"), ParameterFactory.Cpu());
        using var t5Bf16 = T5EncoderModel.FromPretrained(Model("text_encoder_2"), ParameterFactory.Cpu(ScalarType.BFloat16));
        var reference = t5.forward(ids);
        var half = t5Bf16.forward(ids);
        Assert.Equal(ScalarType.BFloat16, half.dtype);
        Assert.True((half.to(ScalarType.Float32) - reference).abs().max().item<float>() < 0.1f * reference.abs().max().item<float>());

        var clipIds = randint(0, 49408, [2, 77], dtype: ScalarType.Int64, generator: new Generator(6));
        using var clip = ClipTextModel.FromPretrained(Model("text_encoder"), ParameterFactory.Cpu());
        using var clipBf16 = ClipTextModel.FromPretrained(Model("text_encoder"), ParameterFactory.Cpu(ScalarType.BFloat16));
        using var c32 = clip.forward(clipIds);
        using var c16 = clipBf16.forward(clipIds);
        Assert.Equal(ScalarType.BFloat16, c16.PooledOutput.dtype);
        Assert.True((c16.PooledOutput.to(ScalarType.Float32) - c32.PooledOutput).abs().max().item<float>() < 0.1f * c32.PooledOutput.abs().max().item<float>());
    }

    [Fact]
    public void ForwardLeavesNoLiveTensorsBehind()
    {
        using var t5 = T5EncoderModel.FromPretrained(Model("text_encoder_2"), ParameterFactory.Cpu());
        using var clip = ClipTextModel.FromPretrained(Model("text_encoder"), ParameterFactory.Cpu());
        using var ids = zeros([1, 77], ScalarType.Int64);
        void Run()
        {
            using var scope = NewDisposeScope();
            t5.forward(ids);
            clip.forward(ids);
        }
        Run();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++) Run();
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}
