using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using OmniConsistency.Inference.Consistency;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Nn;
using OmniConsistency.Inference.Pipelines;
using OmniConsistency.Inference.TextEncoders;
using OmniConsistency.Inference.Vae;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.BuiltIn;

/// <summary>Where the built-in model's parts are.</summary>
/// <param name="Root">The model folder (diffusers FLUX layout).</param>
/// <param name="ConsistencyLoraFile">A random rank-4 consistency LoRA in OmniConsistency.safetensors' key layout.</param>
/// <param name="StylesFolder">A style catalog folder with one demo style (diffusers/peft LoRA + sidecar JSON).</param>
public sealed record BuiltInModelPaths(string Root, string ConsistencyLoraFile, string StylesFolder)
{
    /// <summary>Options that load it (CPU float32 unless given).</summary>
    public FluxModelSetOptions ModelSetOptions(string device = "auto", string? dtype = null) => new()
    {
        ModelFolder = Root,
        ConsistencyLoraFile = ConsistencyLoraFile,
        Device = device,
        DType = dtype,
        Name = BuiltInModel.DisplayName,
    };
}

/// <summary>
/// A small random-weight FLUX stack written into a data directory, so that a fresh machine with nothing configured
/// serves real jobs end to end (the images are noise-like: the weights are random). The configs and the real CLIP/T5
/// tokenizer files are embedded in this assembly; the weights are drawn from seeded generators, so every machine writes
/// the same bytes. The folder is written under a temporary name and moved into place, and a marker file listing every
/// file's size and SHA-256 makes creation idempotent: a valid folder of the current <see cref="Version"/> is kept.
/// </summary>
public static class BuiltInModel
{
    /// <summary>Bump when the written content changes: older folders are then rebuilt.</summary>
    public const int Version = 2;
    public const string FolderName = "builtin-model";
    public const string MarkerFileName = "builtin-model.json";
    public const string DisplayName = "builtin-tiny-flux (random weights)";
    public const string ConsistencyLoraFileName = "omniconsistency.safetensors";
    public const string StylesFolderName = "styles";
    public const string DemoStyleName = "demo-style";
    /// <summary>The demo style's preview image (see <see cref="DemoStylePreview"/>), named by its sidecar.</summary>
    public const string DemoStylePreviewFileName = DemoStyleName + ".png";
    public const int ConsistencyLoraRank = 4;
    public const int DemoStyleRank = 4;

    private const string MarkerFormat = "omniconsistency-builtin-model";
    private static readonly object CreateLock = new();

    /// <summary>Creates <c>dataDirectory/builtin-model</c> unless a valid one of this version is there; returns its paths.</summary>
    public static BuiltInModelPaths EnsureCreated(string dataDirectory, ILogger? logger = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(dataDirectory);
        logger ??= NullLogger.Instance;
        var data = Path.GetFullPath(dataDirectory);
        var root = Path.Combine(data, FolderName);
        lock (CreateLock)
        {
            if (IsValid(root)) return PathsOf(root);
            Directory.CreateDirectory(data);
            var temp = Path.Combine(data, $".{FolderName}.tmp-{Guid.NewGuid():N}");
            try
            {
                var sw = System.Diagnostics.Stopwatch.StartNew();
                Write(temp);
                if (Directory.Exists(root))
                {
                    // Another process may have finished meanwhile; otherwise the folder is stale or damaged.
                    if (IsValid(root)) return PathsOf(root);
                    logger.LogWarning("Replacing the invalid or outdated built-in model at {Folder}", root);
                    var stale = Path.Combine(data, $".{FolderName}.stale-{Guid.NewGuid():N}");
                    Directory.Move(root, stale);
                    Directory.Delete(stale, recursive: true);
                }
                try
                {
                    Directory.Move(temp, root);
                }
                catch (IOException) when (IsValid(root))
                {
                    // Lost a race with another process that wrote the same content.
                }
                logger.LogInformation("Created the built-in random-weight model at {Folder} in {Ms} ms", root, sw.ElapsedMilliseconds);
            }
            finally
            {
                if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            }
            if (!IsValid(root)) throw new IOException($"The built-in model at '{root}' could not be created.");
            return PathsOf(root);
        }
    }

    /// <summary>True when <paramref name="root"/> holds a complete built-in model of this version (marker present, every file's size and hash as listed).</summary>
    public static bool IsValid(string root)
    {
        var marker = Path.Combine(root, MarkerFileName);
        if (!File.Exists(marker)) return false;
        try
        {
            var node = JsonNode.Parse(File.ReadAllText(marker));
            if (node?["format"]?.GetValue<string>() != MarkerFormat || node["version"]?.GetValue<int>() != Version) return false;
            if (node["files"] is not JsonObject files || files.Count == 0) return false;
            foreach (var (relative, entry) in files)
            {
                var path = Path.Combine(root, relative);
                if (relative.Contains("..", StringComparison.Ordinal) || !File.Exists(path)) return false;
                if (new FileInfo(path).Length != entry?["bytes"]?.GetValue<long>()) return false;
                if (Sha256(path) != entry["sha256"]?.GetValue<string>()) return false;
            }
            return true;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static BuiltInModelPaths PathsOf(string root) =>
        new(root, Path.Combine(root, ConsistencyLoraFileName), Path.Combine(root, StylesFolderName));

    /// <summary>Writes the whole model into <paramref name="folder"/> (created; must not exist).</summary>
    internal static void Write(string folder)
    {
        if (Directory.Exists(folder)) throw new IOException($"'{folder}' already exists.");
        Directory.CreateDirectory(folder);
        foreach (var relative in EmbeddedAssets.BuiltInFiles)
        {
            var path = Path.Combine(folder, relative);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllBytes(path, EmbeddedAssets.ReadBuiltIn(relative));
        }
        var meta = ParameterFactory.Meta(ScalarType.Float32);
        var transformerConfig = FluxTransformerConfig.FromJsonFile(Path.Combine(folder, "transformer", "config.json"));
        List<(string, long[])> transformerManifest;
        LoraTargetShapes transformerLinears;
        using (var model = new FluxTransformer2DModel(transformerConfig, meta))
        {
            transformerManifest = RandomWeights.Manifest(model);
            transformerLinears = LoraTargetShapes.FromModule(model);
        }
        WriteWeights(Path.Combine(folder, "transformer", "diffusion_pytorch_model.safetensors"), transformerManifest, seed: 1);
        using (var vae = new AutoencoderKL(VaeConfig.Load(Path.Combine(folder, "vae", "config.json")), meta))
            WriteWeights(Path.Combine(folder, "vae", "diffusion_pytorch_model.safetensors"), RandomWeights.Manifest(vae), seed: 2);
        using (var clip = new ClipTextModel(ClipTextConfig.FromFile(Path.Combine(folder, "text_encoder", "config.json")), meta))
            WriteWeights(Path.Combine(folder, "text_encoder", "model.safetensors"), RandomWeights.Manifest(clip), seed: 3);
        using (var t5 = new T5EncoderModel(T5EncoderConfig.FromFile(Path.Combine(folder, "text_encoder_2", "config.json")), meta))
            WriteWeights(Path.Combine(folder, "text_encoder_2", "model.safetensors"), RandomWeights.Manifest(t5), seed: 4);

        var consistencyManifest = ConsistencyLora.ExpectedShapes(transformerConfig, ConsistencyLoraRank)
            .Select(kv => (kv.Key, kv.Value)).OrderBy(kv => kv.Key, StringComparer.Ordinal);
        WriteWeights(Path.Combine(folder, ConsistencyLoraFileName), consistencyManifest, seed: 5);

        var styles = Path.Combine(folder, StylesFolderName);
        Directory.CreateDirectory(styles);
        WriteWeights(Path.Combine(styles, DemoStyleName + ".safetensors"), DemoStyleManifest(transformerLinears), seed: 6);
        DemoStylePreview.Write(Path.Combine(styles, DemoStyleName + ".safetensors"), Path.Combine(styles, DemoStylePreviewFileName));
        File.WriteAllText(Path.Combine(styles, DemoStyleName + ".json"), DemoStyleSidecar);

        WriteMarker(folder);
    }

    /// <summary>A diffusers/peft-layout LoRA on every attention projection of the double and single blocks (no alpha: scale 1).</summary>
    private static IEnumerable<(string, long[])> DemoStyleManifest(LoraTargetShapes linears)
    {
        string[] suffixes = [".attn.to_q", ".attn.to_k", ".attn.to_v", ".attn.to_out.0", ".attn.add_q_proj", ".attn.add_k_proj", ".attn.add_v_proj", ".attn.to_add_out"];
        foreach (var (name, shape) in linears.Shapes.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (!suffixes.Any(s => name.EndsWith(s, StringComparison.Ordinal))) continue;
            yield return ($"transformer.{name}.lora_A.weight", [DemoStyleRank, shape.In]);
            yield return ($"transformer.{name}.lora_B.weight", [shape.Out, DemoStyleRank]);
        }
    }

    private const string DemoStyleSidecar = """
        {
          "display_name": "Demo style (random weights)",
          "trigger_words": ["demo style"],
          "default_scale": 1.0,
          "description": "A random-weight style LoRA of the built-in demo model. It exercises the style path end to end; its effect is noise, not a style. Its preview pictures its weight update (query/key/value as red/green/blue).",
          "preview": "demo-style.png"
        }
        """;

    private static void WriteWeights(string path, IEnumerable<(string Name, long[] Shape)> manifest, ulong seed)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var scope = NewDisposeScope();
        var tensors = RandomWeights.Draw(manifest, seed);
        SafetensorsWriter.Save(path, tensors);
    }

    private static void WriteMarker(string folder)
    {
        var files = new JsonObject();
        foreach (var path in Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
                     .Select(p => Path.GetRelativePath(folder, p).Replace('\\', '/'))
                     .Order(StringComparer.Ordinal))
        {
            var full = Path.Combine(folder, path);
            files[path] = new JsonObject { ["bytes"] = new FileInfo(full).Length, ["sha256"] = Sha256(full) };
        }
        var marker = new JsonObject
        {
            ["format"] = MarkerFormat,
            ["version"] = Version,
            ["description"] = "Built-in demo FLUX model with RANDOM weights (OmniConsistency Server). Its images are noise-like by design.",
            ["files"] = files,
        };
        File.WriteAllText(Path.Combine(folder, MarkerFileName), marker.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    private static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}
