using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.Tests.Golden;
using OmniConsistency.Inference.Vae;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Vae;

public class VaeModelTests
{
    private static string TinyVaeFolder => Path.Combine(GoldenRoot.Path, "models", "tiny-flux", "vae");

    /// <summary>Fills every parameter with small random values (a stand-in checkpoint for configs with no file).</summary>
    internal static void Randomize(AutoencoderKL model, long seed)
    {
        using var noGrad = no_grad();
        var g = new Generator((ulong)seed);
        foreach (var (name, p) in model.named_parameters())
        {
            using var scope = NewDisposeScope();
            var fanIn = p.dim() > 1 ? p.shape.Skip(1).Aggregate(1L, (a, b) => a * b) : 1;
            var r = rand(p.shape, generator: g).mul(2).sub(1);
            if (name.EndsWith("norm1.weight") || name.EndsWith("norm2.weight") || name.EndsWith("norm.weight") || name.Contains("norm_out.weight"))
                p.copy_(r.mul(0.25).add(1));
            else p.copy_(p.dim() > 1 ? r.div(Math.Sqrt(fanIn)) : r.mul(0.1));
        }
    }

    [Fact]
    public void ConfigTakesDiffusersDefaultsAndRejectsUnsupportedBlocks()
    {
        var c = VaeConfig.Parse("""{"block_out_channels": [32, 64], "norm_num_groups": 8, "shift_factor": null}""");
        Assert.Equal(4, c.LatentChannels);
        Assert.Equal(1, c.LayersPerBlock);
        Assert.Equal(0.18215, c.ScalingFactor);
        Assert.Equal(0.0, c.ShiftFactor);
        Assert.True(c.UseQuantConv && c.UsePostQuantConv && c.MidBlockAddAttention);
        Assert.Equal(2, c.SpatialScale);

        Assert.Throws<VaeConfigException>(() => VaeConfig.Parse("""{"block_out_channels": [32, 64], "down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]}"""));
        Assert.Throws<VaeConfigException>(() => VaeConfig.Parse("""{"block_out_channels": [30], "norm_num_groups": 8}"""));
        Assert.Throws<VaeConfigException>(() => VaeConfig.Parse("""{"block_out_channels": [32], "act_fn": "gelu"}"""));
        Assert.Throws<VaeConfigException>(() => VaeConfig.Parse("""{"block_out_channels": "32"}"""));
        var flux = VaeConfig.Load(Path.Combine(GoldenRoot.Path, "manifests", "flux1-vae-diffusers.config.json"));
        Assert.Equal(VaeConfig.Flux1 with { }, flux with { BlockOutChannels = VaeConfig.Flux1.BlockOutChannels });
        Assert.Equal([128, 256, 512, 512], flux.BlockOutChannels);
    }

    [Fact]
    public void QuantConvsAndNoMidAttentionFollowTheConfig()
    {
        using var scope = NewDisposeScope();
        var config = new VaeConfig { BlockOutChannels = [8, 16], LayersPerBlock = 1, LatentChannels = 4, NormNumGroups = 4, MidBlockAddAttention = false };
        using var vae = new AutoencoderKL(config, ParameterFactory.Cpu());
        var names = vae.named_parameters().Select(p => p.name).ToHashSet();
        Assert.Contains("quant_conv.weight", names);
        Assert.Contains("post_quant_conv.bias", names);
        Assert.DoesNotContain(names, n => n.Contains("attentions"));
        Assert.Equal([8L, 8, 1, 1], vae.quant_conv!.weight.shape);
        Randomize(vae, 3);

        var x = rand([2, 3, 16, 12], generator: new Generator(1)).mul(2).sub(1);
        var moments = vae.encoder.forward(x);
        using (no_grad())
        {
            // quant_conv = 2·identity + 0.5 makes its effect visible in the posterior.
            vae.quant_conv.weight.copy_(eye(8).mul(2).view(8, 8, 1, 1));
            vae.quant_conv.bias!.fill_(0.5);
        }
        using var posterior = vae.Encode(x);
        Assert.Equal([2L, 4, 8, 6], posterior.Mean.shape);
        Assert.True(posterior.Mean.allclose(moments.narrow(1, 0, 4).mul(2).add(0.5), 1e-5, 1e-6));
        Assert.Equal([2L, 3, 16, 12], vae.Decode(posterior.Mean).shape);
    }

    [Fact]
    public void PosteriorClampsLogVarianceAndSamplesLikeDiffusers()
    {
        using var scope = NewDisposeScope();
        var moments = cat([full([1, 2, 2, 2], 0.5f), tensor(new float[] { -40, -1, 0, 25, 3, 19, 21, -31 }).view(1, 2, 2, 2)], 1);
        using var posterior = new VaeLatentDistribution(moments);
        Assert.Equal(new float[] { -30, -1, 0, 20, 3, 19, 20, -30 }, posterior.LogVar.data<float>().ToArray());
        Assert.True(posterior.Std.allclose(posterior.LogVar.mul(0.5).exp()));

        var eps = randn([1, 2, 2, 2], generator: new Generator(42));
        var drawn = posterior.Sample(new Generator(42));
        TensorAssert.Equal(posterior.Mean + posterior.Std * eps, drawn);

        // bf16 posteriors draw their noise directly in bf16 (the reference's randn_tensor(dtype=bf16)).
        using var bf = new VaeLatentDistribution(moments.to(ScalarType.BFloat16));
        var epsBf = randn([1, 2, 2, 2], dtype: ScalarType.BFloat16, generator: new Generator(42));
        TensorAssert.Equal(bf.Mean + bf.Std * epsBf, bf.Sample(new Generator(42)));
        Assert.Throws<ArgumentException>(() => posterior.Sample(zeros(1, 2, 2, 3)));
    }

    [Fact]
    public void ModelSpaceScalingRoundTrips()
    {
        using var scope = NewDisposeScope();
        using var vae = new AutoencoderKL(VaeConfig.Flux1 with { BlockOutChannels = [32, 32], NormNumGroups = 8 }, ParameterFactory.Meta());
        var z = cpu_tensor(new float[] { 0.1159f, 1.0f });
        var scaled = vae.ToModelSpace(z);
        Assert.Equal(0f, scaled[0].item<float>(), 6);
        Assert.Equal((1.0f - 0.1159f) * 0.3611f, scaled[1].item<float>(), 1e-6f);
        Assert.True(vae.FromModelSpace(scaled).allclose(z, 1e-6, 1e-6));
    }

    private static Tensor cpu_tensor(float[] v) => tensor(v);

    [Fact]
    public void Bf16RunsCloseToFp32()
    {
        using var scope = NewDisposeScope();
        using var fp32 = AutoencoderKL.FromFolder(TinyVaeFolder, ParameterFactory.Cpu(ScalarType.Float32));
        using var bf16 = AutoencoderKL.FromFolder(TinyVaeFolder, ParameterFactory.Cpu(ScalarType.BFloat16));
        var image = rand([1, 3, 32, 48], generator: new Generator(5)).mul(2).sub(1);
        using var p32 = fp32.Encode(image);
        using var p16 = bf16.Encode(image);
        Assert.Equal(ScalarType.BFloat16, p16.Mean.dtype);
        AssertClose(p32.Mean, p16.Mean, 0.05);
        var d32 = fp32.Decode(p32.Mean);
        var d16 = bf16.Decode(p32.Mean);
        Assert.Equal(ScalarType.BFloat16, d16.dtype);
        AssertClose(d32, d16, 0.05);
    }

    [Fact]
    public void CpuBf16ConvolutionsRoundOnceLikeABf16Kernel()
    {
        using var scope = NewDisposeScope();
        var conv = new OmniConsistency.Inference.Nn.Conv2d(4, 6, 3, ParameterFactory.Cpu(ScalarType.BFloat16), stride: 2, padding: 0);
        using (no_grad())
        {
            conv.weight.copy_(randn(6, 4, 3, 3, generator: new Generator(2)));
            conv.bias!.copy_(randn(6, generator: new Generator(3)));
        }
        var x = randn([2, 4, 9, 7], generator: new Generator(4)).to(ScalarType.BFloat16);
        var ours = VaeConvolution.Apply(conv, x, 2, 0);
        var native = conv.forward(x);
        Assert.Equal(ScalarType.BFloat16, ours.dtype);
        Assert.Equal(native.shape, ours.shape);
        // The exact fp32 result rounded once to bf16 is within half a bf16 ulp (2^-9 relative) of the exact value.
        var exact = TorchSharp.torch.nn.functional.conv2d(x.to(ScalarType.Float64), conv.weight.to(ScalarType.Float64), conv.bias!.to(ScalarType.Float64), strides: [2, 2]);
        var rel = (ours.to(ScalarType.Float64) - exact).abs().div(exact.abs().clamp_min(1e-3)).max().item<double>();
        Assert.True(rel <= 1.0 / 256, $"relative error {rel}");
        AssertClose(native.to(ScalarType.Float32), ours, 0.01);
    }

    private static void AssertClose(Tensor reference, Tensor actual, double relative)
    {
        var diff = (reference - actual.to(ScalarType.Float32)).abs().max().item<float>();
        var scale = reference.abs().max().item<float>();
        Assert.True(diff <= relative * scale, $"max |diff| {diff} > {relative} × {scale}");
    }

    [Fact]
    public void EncodeAndDecodeLeaveNoLiveTensors()
    {
        using var vae = AutoencoderKL.FromFolder(TinyVaeFolder, ParameterFactory.Cpu());
        using var image = rand([1, 3, 32, 32], generator: new Generator(9));
        void Once()
        {
            using var posterior = vae.Encode(image);
            using var decoded = vae.Decode(posterior.Mean);
        }
        Once();
        var before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++) Once();
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void BadInputsAreRefusedClearly()
    {
        using var scope = NewDisposeScope();
        using var vae = AutoencoderKL.FromFolder(TinyVaeFolder, ParameterFactory.Cpu());
        Assert.Throws<ArgumentException>(() => vae.Encode(zeros(1, 4, 16, 16)));
        Assert.Throws<ArgumentException>(() => vae.Encode(zeros(1, 3, 20, 16)));
        Assert.Throws<ArgumentException>(() => vae.Decode(zeros(1, 8, 2, 2)));
        Assert.Throws<DirectoryNotFoundException>(() => AutoencoderKL.FromFolder("/nonexistent/vae", ParameterFactory.Cpu()));

        var small = new VaeConfig { BlockOutChannels = [8, 16], NormNumGroups = 4, LatentChannels = 4 };
        using var folderCkpt = SafetensorsCheckpoint.Open(TinyVaeFolder);
        var e = Assert.Throws<CheckpointMismatchException>(() => AutoencoderKL.Load(small, new CheckpointTensorSource(folderCkpt), ParameterFactory.Cpu()));
        Assert.NotEmpty(e.Missing);
        Assert.NotEmpty(e.Unexpected);
    }
}
