using System.Text.Json;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Sampling;

/// <summary>diffusers FlowMatchEulerDiscreteScheduler config (scheduler_config.json); missing keys take diffusers' defaults.</summary>
public sealed record FlowMatchSchedulerConfig
{
    public int NumTrainTimesteps { get; init; } = 1000;
    public double Shift { get; init; } = 1.0;
    public bool UseDynamicShifting { get; init; }
    public double BaseShift { get; init; } = 0.5;
    public double MaxShift { get; init; } = 1.15;
    public long BaseImageSeqLen { get; init; } = 256;
    public long MaxImageSeqLen { get; init; } = 4096;

    /// <summary>FLUX.1-dev's scheduler_config.json.</summary>
    public static FlowMatchSchedulerConfig FluxDev { get; } = new() { Shift = 3.0, UseDynamicShifting = true };

    public static FlowMatchSchedulerConfig FromJsonFile(string path)
    {
        if (!File.Exists(path)) throw new InvalidDataException($"Scheduler config '{path}' not found.");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return FromJson(doc.RootElement, path);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Scheduler config '{path}' is not valid JSON ({e.Message}).", e);
        }
    }

    public static FlowMatchSchedulerConfig FromJson(JsonElement root, string source = "scheduler config")
    {
        if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{source}: not a JSON object.");
        var d = new FlowMatchSchedulerConfig();
        double Num(string key, double fallback) => root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null
            ? v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw new InvalidDataException($"{source}: '{key}' must be a number, got {v}.")
            : fallback;
        foreach (var unsupported in new[] { "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas" })
            if (root.TryGetProperty(unsupported, out var u) && u.ValueKind == JsonValueKind.True)
                throw new InvalidDataException($"{source}: '{unsupported}' is not supported (FLUX does not use it).");
        if (root.TryGetProperty("shift_terminal", out var st) && st.ValueKind == JsonValueKind.Number)
            throw new InvalidDataException($"{source}: 'shift_terminal' is not supported (FLUX does not use it).");
        var config = new FlowMatchSchedulerConfig
        {
            NumTrainTimesteps = (int)Num("num_train_timesteps", d.NumTrainTimesteps),
            Shift = Num("shift", d.Shift),
            UseDynamicShifting = root.TryGetProperty("use_dynamic_shifting", out var dyn) && dyn.ValueKind == JsonValueKind.True,
            BaseShift = Num("base_shift", d.BaseShift),
            MaxShift = Num("max_shift", d.MaxShift),
            BaseImageSeqLen = (long)Num("base_image_seq_len", d.BaseImageSeqLen),
            MaxImageSeqLen = (long)Num("max_image_seq_len", d.MaxImageSeqLen),
        };
        if (config.NumTrainTimesteps <= 0 || config.Shift <= 0 || config.MaxImageSeqLen == config.BaseImageSeqLen)
            throw new InvalidDataException($"{source}: num_train_timesteps and shift must be positive and max_image_seq_len must differ from base_image_seq_len.");
        return config;
    }
}

/// <summary>A schedule: <see cref="Sigmas"/> has steps+1 entries (terminal 0), <see cref="Timesteps"/> = σ·num_train_timesteps.</summary>
public sealed record FlowMatchSchedule(float[] Sigmas, float[] Timesteps, double Mu)
{
    public int Steps => Timesteps.Length;
}

/// <summary>
/// Flow-matching Euler sampler as OmniConsistency's FLUX pipeline drives diffusers' FlowMatchEulerDiscreteScheduler:
/// sigmas = float32(linspace(1, 1/N, N)) (float64 linspace), dynamic time shift with mu from the noisy-token count,
/// terminal σ = 0, and the Euler step x + (σ_next − σ)·v with the dtype rules of the reference.
/// Stateless: a step names its index, so one scheduler can serve concurrent generations.
/// </summary>
public sealed class FlowMatchEulerScheduler(FlowMatchSchedulerConfig config)
{
    public FlowMatchSchedulerConfig Config { get; } = config;

    /// <summary>mu = L·m + b with m, b from the config (Python float64 arithmetic).</summary>
    public double Mu(long imageSeqLen)
    {
        double m = (Config.MaxShift - Config.BaseShift) / (Config.MaxImageSeqLen - Config.BaseImageSeqLen);
        double b = Config.BaseShift - m * Config.BaseImageSeqLen;
        return imageSeqLen * m + b;
    }

    /// <param name="steps">Number of denoising steps (≥ 1).</param>
    /// <param name="imageSeqLen">Number of noisy image tokens (condition tokens excluded); used only with dynamic shifting.</param>
    public FlowMatchSchedule CreateSchedule(int steps, long imageSeqLen)
    {
        if (steps < 1) throw new ArgumentOutOfRangeException(nameof(steps), steps, "at least one step is needed");
        if (imageSeqLen < 1) throw new ArgumentOutOfRangeException(nameof(imageSeqLen), imageSeqLen, "the image must have tokens");
        double mu = Mu(imageSeqLen);
        // numpy float32 arithmetic with Python-float operands: every constant becomes float32, every op rounds to float32.
        float expMu = (float)Math.Exp(mu), shift = (float)Config.Shift, shiftMinusOne = (float)(Config.Shift - 1);
        var sigmas = new float[steps + 1];
        var timesteps = new float[steps];
        var linear = Linspace(1.0, 1.0 / steps, steps);
        for (int i = 0; i < steps; i++)
        {
            float s = (float)linear[i];
            float shifted = Config.UseDynamicShifting
                ? expMu / (expMu + (1f / s - 1f))
                : shift * s / (1f + shiftMinusOne * s);
            sigmas[i] = shifted;
            timesteps[i] = shifted * Config.NumTrainTimesteps;
        }
        sigmas[steps] = 0f;
        return new FlowMatchSchedule(sigmas, timesteps, mu);
    }

    /// <summary>
    /// Euler step <paramref name="stepIndex"/>: float32(sample) + (σ[i+1] − σ[i])·v, the difference a 0-dim fp32 tensor so
    /// the product is taken in v's dtype (bf16 rounding in bf16 runs), the result cast back to v's dtype.
    /// </summary>
    public Tensor Step(FlowMatchSchedule schedule, int stepIndex, Tensor modelOutput, Tensor sample)
    {
        if (stepIndex < 0 || stepIndex >= schedule.Steps)
            throw new ArgumentOutOfRangeException(nameof(stepIndex), stepIndex, $"the schedule has {schedule.Steps} steps");
        if (!modelOutput.shape.SequenceEqual(sample.shape))
            throw new ArgumentException($"model output [{string.Join(",", modelOutput.shape)}] and sample [{string.Join(",", sample.shape)}] differ in shape.");
        using var scope = NewDisposeScope();
        float dt = schedule.Sigmas[stepIndex + 1] - schedule.Sigmas[stepIndex];
        var dtTensor = tensor(dt, ScalarType.Float32, modelOutput.device);
        var prev = sample.to(ScalarType.Float32) + dtTensor * modelOutput;
        return prev.to(modelOutput.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>numpy.linspace(start, stop, num) in float64 (endpoint included and exact).</summary>
    internal static double[] Linspace(double start, double stop, int num)
    {
        var y = new double[num];
        if (num == 1)
        {
            y[0] = start;
            return y;
        }
        int div = num - 1;
        double delta = stop - start, step = delta / div;
        for (int i = 0; i < num; i++) y[i] = step == 0 ? i / (double)div * delta + start : i * step + start;
        y[num - 1] = stop;
        return y;
    }
}
