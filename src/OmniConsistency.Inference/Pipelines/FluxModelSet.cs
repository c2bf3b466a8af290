using System.Diagnostics;
using OmniConsistency.Inference.Consistency;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.Sampling;
using OmniConsistency.Inference.TextEncoders;
using OmniConsistency.Inference.Vae;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Pipelines;

/// <summary>
/// One loaded FLUX stack: transformer, VAE, CLIP + tokenizer and T5 + tokenizer (<see cref="PromptEncoder"/>), the
/// scheduler config and, optionally, the OmniConsistency consistency LoRA; plus the index of the Linear modules style
/// LoRAs attach to. Everything is read-only during generation except the Linear adapter hooks that a style
/// <see cref="LoraAdapterSet"/> sets for one generation, so style generations on one set must not overlap
/// (<see cref="StylizationEngine"/> serialises them). Disposing frees every weight.
/// </summary>
public sealed class FluxModelSet : IDisposable
{
    private bool _disposed;

    private FluxModelSet(string name, FluxTransformer2DModel transformer, AutoencoderKL vae, PromptEncoder promptEncoder,
        FlowMatchSchedulerConfig schedulerConfig, ConsistencyLora? consistencyLora, TimeSpan loadTime)
    {
        Name = name;
        Transformer = transformer;
        Vae = vae;
        PromptEncoder = promptEncoder;
        SchedulerConfig = schedulerConfig;
        Scheduler = new FlowMatchEulerScheduler(schedulerConfig);
        ConsistencyLora = consistencyLora;
        LoadTime = loadTime;
        TransformerTargets = new LoraTargetModules(transformer);
        // CLIP LoRA keys (lora_te1_*) are applied only when CLIP shares the transformer's dtype and device: one adapter
        // cache holds one dtype/device. Otherwise they are reported as not applied.
        // Compared on the weights themselves: a configured "cuda" has no index while its tensors live on cuda:0.
        var clipWeight = promptEncoder.Clip.parameters().First();
        var transformerWeight = transformer.parameters().First();
        bool sameDevice = clipWeight.device.type == transformerWeight.device.type && clipWeight.device.index == transformerWeight.device.index;
        ClipTargets = clipWeight.dtype == transformer.DType && sameDevice ? new LoraTargetModules(promptEncoder.Clip) : null;
        LoraTargets = new LoraModelTargets(TransformerTargets.Shapes, ClipTargets?.Shapes);
    }

    public string Name { get; }
    public FluxTransformer2DModel Transformer { get; }
    public AutoencoderKL Vae { get; }
    public PromptEncoder PromptEncoder { get; }
    public FlowMatchSchedulerConfig SchedulerConfig { get; }
    public FlowMatchEulerScheduler Scheduler { get; }
    public ConsistencyLora? ConsistencyLora { get; }
    public TimeSpan LoadTime { get; }
    public Device Device => Transformer.Device;
    public ScalarType DType => Transformer.DType;

    /// <summary>The transformer's Linear modules, for attaching style LoRAs.</summary>
    public LoraTargetModules TransformerTargets { get; }
    /// <summary>CLIP's Linear modules when style LoRAs' text-encoder keys can be applied to it; otherwise null.</summary>
    public LoraTargetModules? ClipTargets { get; }
    /// <summary>What style LoRA files are converted against (for <see cref="LoraLoader"/> / <see cref="LoraAdapterCache"/>).</summary>
    public LoraModelTargets LoraTargets { get; }

    /// <summary>
    /// Loads every component (see <see cref="FluxModelSetOptions"/> for the layouts). Missing files are reported together
    /// (<see cref="ModelSetConfigurationException"/>); weights that do not fit a module raise
    /// <see cref="IO.CheckpointMismatchException"/>. Weights are converted to the configured dtype as they are read.
    /// </summary>
    public static FluxModelSet Load(FluxModelSetOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var sw = Stopwatch.StartNew();
        var device = options.ResolveDevice();
        var dtype = options.ResolveDType(device);
        var factory = new ParameterFactory(dtype, device);
        var encodersFolder = options.TextEncodersFolder ?? options.ModelFolder!;

        var owned = new List<IDisposable>();
        try
        {
            var transformer = options.TransformerFile is { } file
                ? FluxTransformerLoader.FromSingleFile(file, options.SingleFileTransformerConfig(), factory)
                : FluxTransformerLoader.FromDiffusersFolder(Path.Combine(options.ModelFolder!, "transformer"), factory);
            owned.Add(transformer);
            var vae = options.VaeFile is { } vaeFile
                ? AutoencoderKL.FromBflFile(vaeFile, options.VaeConfigFile is null ? VaeConfig.Flux1 : VaeConfig.Load(options.VaeConfigFile), factory)
                : AutoencoderKL.FromFolder(Path.Combine(options.ModelFolder!, "vae"), factory);
            owned.Add(vae);
            var encoderDevice = options.ResolveTextEncoderDevice(device);
            var encoderDType = options.ResolveTextEncoderDType(encoderDevice, device, dtype);
            var promptEncoder = PromptEncoder.FromPretrained(encodersFolder, new ParameterFactory(encoderDType, encoderDevice));
            owned.Add(promptEncoder);
            var lora = options.ConsistencyLoraFile is { } loraFile ? LoadConsistencyLora(loraFile, transformer.Config, device, dtype) : null;
            if (lora is not null) owned.Add(lora);
            return new FluxModelSet(options.Name ?? DefaultName(options), transformer, vae, promptEncoder, LoadSchedulerConfig(options), lora, sw.Elapsed);
        }
        catch
        {
            for (int i = owned.Count - 1; i >= 0; i--) owned[i].Dispose();
            throw;
        }
    }

    /// <summary>
    /// In the file's dtype, as upstream (its LoRA layers compute in the checkpoint's dtype); an fp16 file on the CPU is
    /// converted to the model dtype (libtorch has no fast CPU fp16 GEMM).
    /// </summary>
    private static ConsistencyLora LoadConsistencyLora(string path, FluxTransformerConfig config, Device device, ScalarType dtype)
    {
        var lora = ConsistencyLora.Load(path, config, device);
        if (lora.DType != ScalarType.Float16 || device.type != TorchSharp.DeviceType.CPU) return lora;
        lora.Dispose();
        return ConsistencyLora.Load(path, config, device, dtype);
    }

    /// <summary>scheduler/scheduler_config.json of the model folder (or the encoders folder); FLUX.1-dev's when neither has one.</summary>
    private static FlowMatchSchedulerConfig LoadSchedulerConfig(FluxModelSetOptions options)
    {
        foreach (var root in new[] { options.ModelFolder, options.TextEncodersFolder })
        {
            if (root is null) continue;
            var path = Path.Combine(root, "scheduler", "scheduler_config.json");
            if (File.Exists(path)) return FlowMatchSchedulerConfig.FromJsonFile(path);
        }
        return FlowMatchSchedulerConfig.FluxDev;
    }

    private static string DefaultName(FluxModelSetOptions o)
    {
        var source = o.TransformerFile ?? o.ModelFolder!;
        return Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(source)));
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        ConsistencyLora?.Dispose();
        PromptEncoder.Dispose();
        Vae.Dispose();
        Transformer.Dispose();
    }
}
