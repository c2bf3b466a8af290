using OmniConsistency.Inference.Sampling;
using Xunit;
using static OmniConsistency.Inference.Tests.TensorAssert;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Flux;

public class FlowMatchEulerSchedulerTests
{
    private static readonly FlowMatchEulerScheduler Flux = new(FlowMatchSchedulerConfig.FluxDev);

    // Spec §7: 25 steps at 1024² (4096 noisy tokens), fp32 sigmas incl. terminal 0.
    private static readonly double[] Sigmas25 =
    [
        1.0, 0.98697859, 0.97320414, 0.9586094, 0.94311881, 0.92664737, 0.90909868, 0.89036369, 0.87031782, 0.84881848,
        0.82570165, 0.80077767, 0.77382606, 0.74458873, 0.7127623, 0.67798674, 0.6398322, 0.59778112, 0.55120444, 0.4993301,
        0.44119975, 0.37560901, 0.30102319, 0.21545582, 0.11628877, 0.0,
    ];

    // Spec §6.3: the values that reach the sinusoid after bf16(t), /1000 in bf16, ×1000 in bf16.
    private static readonly float[] SinusoidTimesteps25 =
    [
        1000, 988, 972, 960, 944, 928, 908, 892, 872, 848, 824, 800, 772, 744, 712, 676, 640, 596, 552, 500, 442, 376, 302, 215,
        116.5f,
    ];

    [Fact]
    public void FluxDevScheduleFor25StepsAt4096TokensMatchesTheReference()
    {
        var s = Flux.CreateSchedule(25, 4096);
        Assert.Equal(1.15, s.Mu, 12);
        Assert.Equal(26, s.Sigmas.Length);
        for (int i = 0; i < Sigmas25.Length; i++) Assert.Equal(Sigmas25[i], s.Sigmas[i], 6e-8);
        for (int i = 0; i < 25; i++) Assert.Equal(s.Sigmas[i] * 1000f, s.Timesteps[i]);
    }

    [Fact]
    public void TimestepsReachTheSinusoidQuantisedThreeTimesInBf16()
    {
        var s = Flux.CreateSchedule(25, 4096);
        using var scope = NewDisposeScope();
        var fed = tensor(s.Timesteps).to(ScalarType.BFloat16) / 1000;
        var reaching = (fed.to(ScalarType.BFloat16) * 1000).to(ScalarType.Float32).data<float>().ToArray();
        Assert.Equal(SinusoidTimesteps25, reaching);
        var guidance = (full([1], 3.5f).to(ScalarType.BFloat16) * 1000).to(ScalarType.Float32).item<float>();
        Assert.Equal(3504f, guidance);
    }

    [Fact]
    public void MuUsesOnlyTheNoisyTokenCount()
    {
        Assert.Equal(0.9116666666666666, Flux.Mu(2688), 12);
        Assert.Equal(0.5, Flux.Mu(256), 12);
    }

    [Fact]
    public void OneStepScheduleIsSigmaOneThenZero()
    {
        var s = Flux.CreateSchedule(1, 256);
        Assert.Equal([1f, 0f], s.Sigmas);
        Assert.Equal([1000f], s.Timesteps);
    }

    [Fact]
    public void StaticShiftFollowsTheShiftFormula()
    {
        var scheduler = new FlowMatchEulerScheduler(new FlowMatchSchedulerConfig { Shift = 3.0, UseDynamicShifting = false });
        var s = scheduler.CreateSchedule(4, 4096);
        double[] linear = [1.0, 0.75, 0.5, 0.25];
        for (int i = 0; i < 4; i++) Assert.Equal(3 * linear[i] / (1 + 2 * linear[i]), s.Sigmas[i], 6);
        Assert.Equal(0f, s.Sigmas[4]);
    }

    [Fact]
    public void EulerStepRoundsTheProductInTheModelDtypeAndCastsBack()
    {
        var s = Flux.CreateSchedule(4, 24);
        using var scope = NewDisposeScope();
        var g = new Generator(1);
        var sample = randn([1, 8, 16], generator: g).to(ScalarType.BFloat16);
        var v = randn([1, 8, 16], generator: g).to(ScalarType.BFloat16);
        var next = Flux.Step(s, 1, v, sample);
        Assert.Equal(ScalarType.BFloat16, next.dtype);
        // libtorch's rule for a 0-dim fp32 tensor times a bf16 tensor (the reference's (σ_next − σ)·v): the difference
        // enters in bf16 and the product is rounded to bf16; the add is fp32; the result is cast back to bf16.
        float dt = s.Sigmas[2] - s.Sigmas[1];
        var dtBf16 = tensor(dt).to(ScalarType.BFloat16).to(ScalarType.Float32);
        var product = (v.to(ScalarType.Float32) * dtBf16).to(ScalarType.BFloat16).to(ScalarType.Float32);
        var expected = (sample.to(ScalarType.Float32) + product).to(ScalarType.BFloat16);
        Assert.True(TensorsEqual(next, expected));
        var fp32Product = (sample.to(ScalarType.Float32) + v.to(ScalarType.Float32) * dt).to(ScalarType.BFloat16);
        Assert.False(TensorsEqual(next, fp32Product), "the product must be rounded in bf16, not taken in fp32");

        var next32 = Flux.Step(s, 3, v.to(ScalarType.Float32), sample);
        Assert.Equal(ScalarType.Float32, next32.dtype);
        Assert.Throws<ArgumentOutOfRangeException>(() => Flux.Step(s, 4, v, sample));
    }

    [Fact]
    public void ConfigFileOfFluxDevIsRead()
    {
        var path = Path.Combine(Golden.GoldenRoot.Path, "models", "tiny-flux", "scheduler", "scheduler_config.json");
        Assert.Equal(FlowMatchSchedulerConfig.FluxDev, FlowMatchSchedulerConfig.FromJsonFile(path));
    }
}
