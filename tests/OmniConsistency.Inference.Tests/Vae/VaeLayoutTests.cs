using System.Text.RegularExpressions;
using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.Tests.Golden;
using OmniConsistency.Inference.Vae;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Vae;

/// <summary>Checkpoint layouts: BFL/LDM files and deprecated attention names load the same weights as the diffusers folder.</summary>
public class VaeLayoutTests
{
    private static string TinyVaeFolder => Path.Combine(GoldenRoot.Path, "models", "tiny-flux", "vae");

    [Theory]
    [InlineData("manifest_flux1_vae_diffusers")]
    [InlineData("manifest_flux1_vae_bfl")]
    public void FluxVaeManifestsMatchOnTheMetaDevice(string caseName)
    {
        using var c = new GoldenCase(GoldenRoot.Path, caseName);
        VaeManifestCheck.CheckManifest(c);
    }

    [Theory]
    [InlineData("")]
    [InlineData("first_stage_model.")]
    public void BflFileLoadsBitIdenticalWeights(string prefix)
    {
        using var scope = NewDisposeScope();
        using var reference = AutoencoderKL.FromFolder(TinyVaeFolder, ParameterFactory.Cpu());
        var path = WriteState(reference, name => prefix + ToBfl(name, reference.Config.BlockOutChannels.Count), reshapeAttention: true);
        using var bfl = AutoencoderKL.FromBflFile(path, reference.Config, ParameterFactory.Cpu());
        AssertSameParameters(reference, bfl);
        var z = randn([1, 16, 4, 6], generator: new Generator(7));
        TensorAssert.Equal(reference.Decode(z), bfl.Decode(z));
    }

    [Fact]
    public void DeprecatedAttentionNamesLoad()
    {
        using var scope = NewDisposeScope();
        using var reference = AutoencoderKL.FromFolder(TinyVaeFolder, ParameterFactory.Cpu());
        var path = WriteState(reference, name => name.Replace(".to_q.", ".query.").Replace(".to_k.", ".key.")
            .Replace(".to_v.", ".value.").Replace(".to_out.0.", ".proj_attn."), reshapeAttention: false);
        using var ckpt = SafetensorsCheckpoint.Open(path);
        Assert.Contains("encoder.mid_block.attentions.0.query.weight", ckpt.Keys);
        using var loaded = AutoencoderKL.Load(reference.Config, new CheckpointTensorSource(ckpt), ParameterFactory.Cpu());
        AssertSameParameters(reference, loaded);
    }

    [Fact]
    public void BflMappingReversesTheDecoderBlocks()
    {
        Assert.Equal("decoder.up_blocks.3.resnets.0.conv_shortcut.weight", VaeCheckpointLayouts.BflKeyToDiffusers("decoder.up.0.block.0.nin_shortcut.weight", 4));
        Assert.Equal("decoder.up_blocks.0.upsamplers.0.conv.bias", VaeCheckpointLayouts.BflKeyToDiffusers("decoder.up.3.upsample.conv.bias", 4));
        Assert.Equal("decoder.up_blocks.1.resnets.2.norm1.weight", VaeCheckpointLayouts.BflKeyToDiffusers("decoder.up.1.block.2.norm1.weight", 3));
        Assert.Equal("encoder.down_blocks.2.downsamplers.0.conv.weight", VaeCheckpointLayouts.BflKeyToDiffusers("encoder.down.2.downsample.conv.weight", 4));
        Assert.Equal("encoder.mid_block.attentions.0.to_out.0.weight", VaeCheckpointLayouts.BflKeyToDiffusers("encoder.mid.attn_1.proj_out.weight", 4));
        Assert.Equal("decoder.conv_norm_out.bias", VaeCheckpointLayouts.BflKeyToDiffusers("decoder.norm_out.bias", 4));
        Assert.Null(VaeCheckpointLayouts.BflKeyToDiffusers("decoder.up.4.block.0.conv1.weight", 4));
        Assert.Null(VaeCheckpointLayouts.BflKeyToDiffusers("encoder.up.0.block.0.conv1.weight", 4));
        Assert.Null(VaeCheckpointLayouts.BflKeyToDiffusers("model.diffusion_model.img_in.weight", 4));
    }

    [Fact]
    public void UnknownBflKeysAreReportedNotIgnored()
    {
        using var scope = NewDisposeScope();
        using var reference = AutoencoderKL.FromFolder(TinyVaeFolder, ParameterFactory.Cpu());
        var path = WriteState(reference, name => ToBfl(name, 4), reshapeAttention: true, extra: ("encoder.mid.attn_2.q.weight", ones(2)));
        var e = Assert.Throws<CheckpointMismatchException>(() => AutoencoderKL.FromBflFile(path, reference.Config, ParameterFactory.Cpu()));
        Assert.Equal(["encoder.mid.attn_2.q.weight"], e.Unexpected);
    }

    /// <summary>Writes a module's parameters under other names (an independent inverse of the loader's mapping).</summary>
    private static string WriteState(AutoencoderKL model, Func<string, string> rename, bool reshapeAttention, (string Name, Tensor Value)? extra = null)
    {
        var state = model.named_parameters().Select(p =>
        {
            var t = p.parameter.detach();
            if (reshapeAttention && p.parameter.dim() == 2) t = t.reshape(t.shape[0], t.shape[1], 1, 1);
            return new KeyValuePair<string, Tensor>(rename(p.name), t);
        }).ToList();
        if (extra is { } x) state.Add(new(x.Name, x.Value));
        var path = Path.Combine(Directory.CreateTempSubdirectory("vae-layout").FullName, "ae.safetensors");
        SafetensorsWriter.Save(path, state);
        return path;
    }

    private static string ToBfl(string name, int blocks)
    {
        name = name.Replace("conv_norm_out", "norm_out").Replace("conv_shortcut", "nin_shortcut")
            .Replace("mid_block.attentions.0.group_norm", "mid.attn_1.norm").Replace("mid_block.attentions.0.to_q", "mid.attn_1.q")
            .Replace("mid_block.attentions.0.to_k", "mid.attn_1.k").Replace("mid_block.attentions.0.to_v", "mid.attn_1.v")
            .Replace("mid_block.attentions.0.to_out.0", "mid.attn_1.proj_out")
            .Replace("mid_block.resnets.0", "mid.block_1").Replace("mid_block.resnets.1", "mid.block_2")
            .Replace("downsamplers.0", "downsample").Replace("upsamplers.0", "upsample");
        name = Regex.Replace(name, @"down_blocks\.(\d+)\.resnets\.", "down.$1.block.");
        name = Regex.Replace(name, @"down_blocks\.(\d+)\.", "down.$1.");
        name = Regex.Replace(name, @"up_blocks\.(\d+)\.resnets\.", m => $"up.{blocks - 1 - int.Parse(m.Groups[1].Value)}.block.");
        name = Regex.Replace(name, @"up_blocks\.(\d+)\.", m => $"up.{blocks - 1 - int.Parse(m.Groups[1].Value)}.");
        return name;
    }

    private static void AssertSameParameters(AutoencoderKL expected, AutoencoderKL actual)
    {
        var a = actual.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in expected.named_parameters())
            TensorAssert.Equal(p, a[name], name);
        Assert.Equal(expected.named_parameters().Count(), a.Count);
    }
}
