using System.Globalization;
using System.Reflection;
using OmniConsistency.Inference.Imaging;
using OmniConsistency.Inference.Lora;

namespace OmniConsistency.Inference.Pipelines;

/// <summary>
/// Everything <see cref="StylizationEngine.Create"/> needs: which model, where the style LoRAs are, the device, and the
/// request limits. Plain settable properties, so it binds from configuration (ConfigurationBinder) or from a flat
/// key/value list with <see cref="FromConfiguration"/>. With neither <see cref="ModelPath"/> nor
/// <see cref="TransformerPath"/> set, the engine creates and serves the built-in random-weight demo model in
/// <see cref="DataDirectory"/>.
/// </summary>
public sealed record StylizationEngineOptions
{
    // ---- model ----
    /// <summary>A diffusers FLUX.1-dev folder (model_index.json, transformer/, vae/, text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/, scheduler/).</summary>
    public string? ModelPath { get; set; }
    /// <summary>A Black Forest Labs single-file transformer (flux1-dev.safetensors); overrides ModelPath's transformer.</summary>
    public string? TransformerPath { get; set; }
    /// <summary>The config.json of <see cref="TransformerPath"/>; default: FLUX.1-dev's (embedded).</summary>
    public string? TransformerConfigPath { get; set; }
    /// <summary>A single-file VAE (BFL ae.safetensors); overrides ModelPath's vae/.</summary>
    public string? VaePath { get; set; }
    /// <summary>The config.json of <see cref="VaePath"/>; default: FLUX.1's.</summary>
    public string? VaeConfigPath { get; set; }
    /// <summary>Folder with text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/ (needed with single files; default ModelPath).</summary>
    public string? TextEncodersPath { get; set; }
    /// <summary>OmniConsistency.safetensors. Required with a configured model; the built-in model brings its own.</summary>
    public string? ConsistencyLoraPath { get; set; }
    /// <summary>The style catalog folder (&lt;name&gt;.safetensors + optional &lt;name&gt;.json); default: none (built-in: its demo style).</summary>
    public string? LoraFolder { get; set; }
    /// <summary>Where the built-in model is created (DataDirectory/builtin-model).</summary>
    public string DataDirectory { get; set; } = "data";
    /// <summary>"auto" (CUDA when available), "cpu", "cuda", "cuda:N".</summary>
    public string Device { get; set; } = "auto";
    /// <summary>"bfloat16", "float32", ...; default bfloat16 on CUDA, float32 on CPU.</summary>
    public string? DType { get; set; }
    /// <summary>Where CLIP and T5 run: "auto" (= <see cref="Device"/>), "cpu", "cuda", "cuda:N". "cpu" keeps T5-XXL's
    /// 9.5 GB (bf16) off a small GPU at the cost of a slower encode (cached prompts skip it: <see cref="PromptCacheBytes"/>).
    /// Their outputs are moved to the transformer's device and dtype.</summary>
    public string TextEncoderDevice { get; set; } = "auto";
    /// <summary>The text encoders' dtype; default: <see cref="DType"/>'s choice when they share the model's device, else
    /// float32 on the CPU (bfloat16 halves T5-XXL's 19 GB there), bfloat16 on CUDA.</summary>
    public string? TextEncoderDType { get; set; }
    /// <summary>Bytes of prompt embeddings (T5 hidden states + CLIP pooled) kept for repeated prompts; 0 disables. One
    /// FLUX prompt is 4 MB in bf16, 8 MB in fp32.</summary>
    public long PromptCacheBytes { get; set; } = 64L << 20;
    /// <summary>libtorch intra-op threads (torch.set_num_threads); null = libtorch's default.</summary>
    public int? Threads { get; set; }
    /// <summary>Warm up the condition branch without the T5 tokens (spec §8.8): same result up to float rounding, cheaper.</summary>
    public bool TextFreeWarmup { get; set; }

    // ---- request limits ----
    /// <summary>Largest output width or height (pixels, a multiple of 16 is used).</summary>
    public int MaxSide { get; set; } = 2048;
    /// <summary>Largest output width × height.</summary>
    public long MaxPixels { get; set; } = 2048L * 2048;
    /// <summary>Output area when the request gives no size (the photo's aspect ratio at about this many pixels).</summary>
    public long DefaultPixels { get; set; } = OutputSize.DefaultPixels;
    public int MaxCondSize { get; set; } = 1024;
    /// <summary>Informational for callers (the request record carries its own default of 512).</summary>
    public int DefaultCondSize { get; set; } = 512;
    /// <summary>Informational for callers (the request record carries its own default of 25).</summary>
    public int DefaultSteps { get; set; } = 25;
    public int MaxSteps { get; set; } = 50;
    public double MinGuidance { get; set; }
    public double MaxGuidance { get; set; } = 20;
    public int MaxStyles { get; set; } = 4;
    public int MaxPromptLength { get; set; } = 4000;

    // ---- uploads and outputs ----
    public long MaxImageBytes { get; set; } = ImageLimits.Default.MaxEncodedBytes;
    public int MaxImageSide { get; set; } = ImageLimits.Default.MaxSide;
    public long MaxImagePixels { get; set; } = ImageLimits.Default.MaxPixels;
    public int MaxDecodeMegabytes { get; set; } = ImageLimits.Default.MaxAllocationMegabytes;
    public int JpegQuality { get; set; } = ImageEncodeOptions.Default.JpegQuality;
    public int WebpQuality { get; set; } = ImageEncodeOptions.Default.WebpQuality;

    // ---- style LoRAs ----
    public long LoraHostBudgetBytes { get; set; } = new LoraCacheOptions().HostBudgetBytes;
    public long LoraDeviceBudgetBytes { get; set; } = new LoraCacheOptions().DeviceBudgetBytes;
    /// <summary>Seconds after which the style folder is listed again on the next use (new LoRAs appear without a restart); 0: never.</summary>
    public int StyleRefreshSeconds { get; set; } = 30;
    /// <summary>Style names to load into the LoRA cache at start.</summary>
    public List<string> PreloadStyles { get; set; } = [];
    /// <summary>"auto" (merge when it pays, see LoraApplicationPolicy), "runtime" or "merged".</summary>
    public string LoraApplication { get; set; } = "auto";
    public long LoraMergeBudgetBytes { get; set; } = new LoraApplicationPolicy().MergeBackupBudgetBytes;

    /// <summary>True when no model is configured: the built-in demo model is served.</summary>
    public bool UsesBuiltInModel => string.IsNullOrWhiteSpace(ModelPath) && string.IsNullOrWhiteSpace(TransformerPath);

    public ImageLimits ImageLimits => new()
    {
        MaxEncodedBytes = MaxImageBytes, MaxSide = MaxImageSide, MaxPixels = MaxImagePixels, MaxAllocationMegabytes = MaxDecodeMegabytes,
    };

    public ImageEncodeOptions EncodeOptions => new() { JpegQuality = JpegQuality, WebpQuality = WebpQuality };

    public LoraApplicationPolicy LoraPolicy => new()
    {
        Force = LoraApplication.Trim().ToLowerInvariant() switch
        {
            "auto" => null,
            "runtime" or "run-time" => Lora.LoraApplication.RunTime,
            "merged" or "merge" => Lora.LoraApplication.Merged,
            _ => throw new ArgumentException($"LoraApplication must be auto, runtime or merged, not '{LoraApplication}'."),
        },
        MergeBackupBudgetBytes = LoraMergeBudgetBytes,
    };

    /// <summary>Checks the values themselves (not the files); throws <see cref="ArgumentException"/> listing every problem.</summary>
    public void Validate()
    {
        var problems = new List<string>();
        void Require(bool ok, string problem)
        {
            if (!ok) problems.Add(problem);
        }
        Require(MaxSide >= 16, $"MaxSide must be at least 16 (got {MaxSide})");
        Require(MaxPixels >= 256, $"MaxPixels must be at least 256 (got {MaxPixels})");
        Require(DefaultPixels >= 256 && DefaultPixels <= MaxPixels, $"DefaultPixels must be in 256..MaxPixels (got {DefaultPixels})");
        Require(MaxCondSize >= 16, $"MaxCondSize must be at least 16 (got {MaxCondSize})");
        Require(DefaultCondSize >= 16 && DefaultCondSize % 16 == 0 && DefaultCondSize <= MaxCondSize, $"DefaultCondSize must be a multiple of 16 in 16..MaxCondSize (got {DefaultCondSize})");
        Require(MaxSteps is >= 1 and <= 1000, $"MaxSteps must be in 1..1000 (got {MaxSteps})");
        Require(DefaultSteps >= 1 && DefaultSteps <= MaxSteps, $"DefaultSteps must be in 1..MaxSteps (got {DefaultSteps})");
        Require(double.IsFinite(MinGuidance) && double.IsFinite(MaxGuidance) && MinGuidance <= MaxGuidance, $"MinGuidance..MaxGuidance must be a finite range (got {MinGuidance}..{MaxGuidance})");
        Require(MaxStyles >= 0, $"MaxStyles must not be negative (got {MaxStyles})");
        Require(MaxPromptLength >= 0, $"MaxPromptLength must not be negative (got {MaxPromptLength})");
        Require(MaxImageBytes > 0 && MaxImageSide > 0 && MaxImagePixels > 0 && MaxDecodeMegabytes > 0, "image limits must be positive");
        Require(JpegQuality is >= 1 and <= 100 && WebpQuality is >= 1 and <= 100, "JpegQuality and WebpQuality must be in 1..100");
        Require(LoraHostBudgetBytes >= 0 && LoraDeviceBudgetBytes >= 0 && LoraMergeBudgetBytes >= 0, "LoRA budgets must not be negative");
        Require(StyleRefreshSeconds >= 0, $"StyleRefreshSeconds must not be negative (got {StyleRefreshSeconds})");
        Require(PromptCacheBytes >= 0, $"PromptCacheBytes must not be negative (got {PromptCacheBytes})");
        Require(Threads is null or >= 1, $"Threads must be at least 1 (got {Threads})");
        Require(!string.IsNullOrWhiteSpace(DataDirectory), "DataDirectory must be set");
        Require(UsesBuiltInModel || !string.IsNullOrWhiteSpace(ConsistencyLoraPath), "ConsistencyLoraPath (OmniConsistency.safetensors) is required with a configured model");
        foreach (var check in new Action[]
                 {
                     () => _ = LoraPolicy,
                     () => TorchRuntime.ParseDType(DType),
                     () => TorchRuntime.ParseDType(TextEncoderDType),
                     () => FluxModelSetOptions.CheckDeviceName(TextEncoderDevice, nameof(TextEncoderDevice)),
                 })
        {
            try
            {
                check();
            }
            catch (ArgumentException e)
            {
                problems.Add(e.Message.TrimEnd('.'));
            }
        }
        if (problems.Count > 0) throw new ArgumentException("Invalid stylization engine options: " + string.Join("; ", problems) + ".");
    }

    /// <summary>
    /// Reads options from flat configuration pairs, keys relative to the section (what
    /// <c>IConfiguration.GetSection("Engine").AsEnumerable(makePathsRelative: true)</c> gives): property names, case-insensitive;
    /// list entries as <c>PreloadStyles:0</c>, <c>PreloadStyles:1</c>, ... or one comma-separated value. Pairs with a null
    /// value (section nodes) are skipped; an unknown key or an unparsable value is an <see cref="ArgumentException"/>
    /// (a misspelt ModelPath must not silently fall back to the built-in model).
    /// </summary>
    public static StylizationEngineOptions FromConfiguration(IEnumerable<KeyValuePair<string, string?>> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var options = new StylizationEngineOptions();
        var properties = typeof(StylizationEngineOptions).GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.CanWrite).ToDictionary(p => p.Name, StringComparer.OrdinalIgnoreCase);
        var lists = new Dictionary<string, SortedDictionary<int, string>>(StringComparer.OrdinalIgnoreCase);
        var problems = new List<string>();
        foreach (var (rawKey, value) in values)
        {
            if (value is null || string.IsNullOrEmpty(rawKey)) continue;
            var parts = rawKey.Split(':');
            if (!properties.TryGetValue(parts[0], out var property))
            {
                problems.Add($"unknown key '{rawKey}'");
                continue;
            }
            try
            {
                if (property.PropertyType == typeof(List<string>))
                {
                    var list = lists.TryGetValue(property.Name, out var l) ? l : lists[property.Name] = [];
                    if (parts.Length == 1)
                        foreach (var item in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)) list[list.Count] = item;
                    else if (parts.Length == 2 && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int index)) list[index] = value;
                    else problems.Add($"'{rawKey}' is not a list entry (use {property.Name}:0, {property.Name}:1, ...)");
                    continue;
                }
                if (parts.Length != 1)
                {
                    problems.Add($"unknown key '{rawKey}'");
                    continue;
                }
                property.SetValue(options, Parse(value, property.PropertyType));
            }
            catch (Exception e) when (e is FormatException or OverflowException)
            {
                problems.Add($"'{rawKey}' = '{value}' is not a valid {Nullable.GetUnderlyingType(property.PropertyType)?.Name ?? property.PropertyType.Name}");
            }
        }
        foreach (var (name, list) in lists) properties[name].SetValue(options, list.Values.ToList());
        if (problems.Count > 0) throw new ArgumentException("Invalid stylization engine configuration: " + string.Join("; ", problems) + ".");
        return options;
    }

    private static object? Parse(string value, Type type)
    {
        var target = Nullable.GetUnderlyingType(type) ?? type;
        if (target != typeof(string) && value.Trim().Length == 0 && Nullable.GetUnderlyingType(type) is not null) return null;
        var c = CultureInfo.InvariantCulture;
        return target switch
        {
            _ when target == typeof(string) => value,
            _ when target == typeof(int) => int.Parse(value.Trim(), NumberStyles.Integer, c),
            _ when target == typeof(long) => long.Parse(value.Trim(), NumberStyles.Integer, c),
            _ when target == typeof(double) => double.Parse(value.Trim(), NumberStyles.Float, c),
            _ when target == typeof(bool) => bool.Parse(value.Trim()),
            _ => throw new FormatException($"unsupported option type {target.Name}"),
        };
    }
}
