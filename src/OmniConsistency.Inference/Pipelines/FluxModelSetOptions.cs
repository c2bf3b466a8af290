using OmniConsistency.Inference.BuiltIn;
using OmniConsistency.Inference.Flux;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Pipelines;

/// <summary>
/// Where a FLUX model set comes from, on which device and in which dtype. Two layouts:
/// <list type="bullet">
/// <item>a stock diffusers FLUX.1-dev folder (<see cref="ModelFolder"/>: model_index.json, transformer/, vae/,
/// text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/, scheduler/);</item>
/// <item>Black Forest Labs single files (<see cref="TransformerFile"/> = flux1-dev.safetensors, <see cref="VaeFile"/> =
/// ae.safetensors) with the text encoders and tokenizers from <see cref="TextEncodersFolder"/> (a folder holding
/// text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/ — e.g. the diffusers repo without its transformer).</item>
/// </list>
/// The two can be mixed: a single-file entry overrides that component of <see cref="ModelFolder"/>.
/// </summary>
public sealed record FluxModelSetOptions
{
    /// <summary>A diffusers FLUX folder (the model root with model_index.json).</summary>
    public string? ModelFolder { get; init; }
    /// <summary>A single-file transformer (BFL layout, optionally under <c>model.diffusion_model.</c>, or diffusers keys).</summary>
    public string? TransformerFile { get; init; }
    /// <summary>The transformer config.json describing <see cref="TransformerFile"/>; null = FLUX.1-dev's (embedded).</summary>
    public string? TransformerConfigFile { get; init; }
    /// <summary>A single-file VAE (BFL <c>ae.safetensors</c> or diffusers keys).</summary>
    public string? VaeFile { get; init; }
    /// <summary>The VAE config.json describing <see cref="VaeFile"/>; null = FLUX.1's.</summary>
    public string? VaeConfigFile { get; init; }
    /// <summary>Folder with text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/ (and optionally scheduler/); null = <see cref="ModelFolder"/>.</summary>
    public string? TextEncodersFolder { get; init; }
    /// <summary>OmniConsistency.safetensors (the consistency LoRA); null = no condition LoRA (plain FLUX / conditioning without it).</summary>
    public string? ConsistencyLoraFile { get; init; }
    /// <summary>"cpu", "cuda", "cuda:N" or "auto" (CUDA when available).</summary>
    public string Device { get; init; } = "auto";
    /// <summary>"float32", "bfloat16", ...; null = bfloat16 on CUDA (the reference's dtype), float32 on CPU (libtorch's CPU
    /// bf16 convolutions and small GEMMs make bf16 several times slower there).</summary>
    public string? DType { get; init; }
    /// <summary>Where CLIP and T5 are loaded: "auto" = <see cref="Device"/>, or "cpu", "cuda", "cuda:N". Their outputs are
    /// moved to the transformer's device and dtype by the pipelines.</summary>
    public string TextEncoderDevice { get; init; } = "auto";
    /// <summary>The text encoders' dtype; null = the model's dtype when they share its device ("auto"), otherwise float32
    /// on the CPU and bfloat16 on CUDA.</summary>
    public string? TextEncoderDType { get; init; }
    /// <summary>A display name; null = derived from the paths.</summary>
    public string? Name { get; init; }

    public Device ResolveDevice() => TorchRuntime.ParseDevice(Device);

    public ScalarType ResolveDType(Device device) =>
        DType is null ? (device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32) : TorchRuntime.ParseDType(DType);

    public bool TextEncodersFollowModel => string.IsNullOrWhiteSpace(TextEncoderDevice) || TextEncoderDevice.Trim().Equals("auto", StringComparison.OrdinalIgnoreCase);

    /// <summary>The text encoders' device, given the model's.</summary>
    public Device ResolveTextEncoderDevice(Device modelDevice) => TextEncodersFollowModel ? modelDevice : TorchRuntime.ParseDevice(TextEncoderDevice);

    /// <summary>The text encoders' dtype, given their device and the model's device and dtype.</summary>
    public ScalarType ResolveTextEncoderDType(Device encoderDevice, Device modelDevice, ScalarType modelDType)
    {
        if (TextEncoderDType is not null) return TorchRuntime.ParseDType(TextEncoderDType);
        if (encoderDevice.type == modelDevice.type && encoderDevice.index == modelDevice.index && TextEncodersFollowModel) return modelDType;
        return encoderDevice.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
    }

    /// <summary>Checks the form of a device setting ("auto", "cpu", "cuda", "cuda:N") without touching the device.</summary>
    public static void CheckDeviceName(string? device, string what)
    {
        var d = (device ?? "auto").Trim().ToLowerInvariant();
        bool ok = d is "auto" or "cpu" or "cuda" || (d.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(d[5..], out int n) && n >= 0);
        if (!ok) throw new ArgumentException($"{what} must be auto, cpu, cuda or cuda:N, not '{device}'.");
    }

    /// <summary>The transformer config for <see cref="TransformerFile"/>.</summary>
    public FluxTransformerConfig SingleFileTransformerConfig() => TransformerConfigFile is null
        ? FluxTransformerConfig.Parse(EmbeddedAssets.Flux1DevTransformerConfigJson, "embedded FLUX.1-dev transformer config")
        : FluxTransformerConfig.FromJsonFile(TransformerConfigFile);

    /// <summary>Checks that every component has a source that exists; throws <see cref="ModelSetConfigurationException"/> listing every problem.</summary>
    public void Validate()
    {
        var problems = new List<string>();
        void File(string? path, string what)
        {
            if (path is not null && !System.IO.File.Exists(path)) problems.Add($"{what} '{path}' does not exist");
        }
        void Folder(string? root, string sub, string what)
        {
            if (root is not null && !Directory.Exists(Path.Combine(root, sub))) problems.Add($"{what}: '{Path.Combine(root, sub)}' does not exist");
        }
        if (ModelFolder is not null && !Directory.Exists(ModelFolder)) problems.Add($"model folder '{ModelFolder}' does not exist");
        File(TransformerFile, "transformer file");
        File(TransformerConfigFile, "transformer config");
        File(VaeFile, "VAE file");
        File(VaeConfigFile, "VAE config");
        File(ConsistencyLoraFile, "consistency LoRA");
        if (TextEncodersFolder is not null && !Directory.Exists(TextEncodersFolder)) problems.Add($"text encoders folder '{TextEncodersFolder}' does not exist");
        if (TransformerFile is null)
        {
            if (ModelFolder is null) problems.Add("no transformer: set a model folder (diffusers layout) or a transformer file");
            else Folder(ModelFolder, "transformer", "transformer");
        }
        if (VaeFile is null)
        {
            if (ModelFolder is null) problems.Add("no VAE: set a model folder (diffusers layout) or a VAE file (ae.safetensors)");
            else Folder(ModelFolder, "vae", "VAE");
        }
        var encoders = TextEncodersFolder ?? ModelFolder;
        if (encoders is null) problems.Add("no text encoders: set a model folder or a text encoders folder (text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/)");
        else if (Directory.Exists(encoders))
            foreach (var sub in new[] { "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2" })
                Folder(encoders, sub, "text encoders");
        if (problems.Count > 0) throw new ModelSetConfigurationException(problems);
    }
}

/// <summary>The model configuration names missing or unusable files; every problem is listed.</summary>
public sealed class ModelSetConfigurationException(IReadOnlyList<string> problems)
    : Exception("The FLUX model set cannot be loaded: " + string.Join("; ", problems) + ".")
{
    public IReadOnlyList<string> Problems { get; } = problems;
}
