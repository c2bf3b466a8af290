using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;

namespace OmniConsistency.Inference.Flux;

/// <summary>
/// Builds a <see cref="FluxTransformer2DModel"/> and loads its weights strictly (every missing, unexpected or
/// mis-shaped key is reported together in a <see cref="CheckpointMismatchException"/>). Device and dtype come from the
/// <see cref="ParameterFactory"/>; tensors are converted as they are read. With a meta factory only names and shapes
/// are checked and no data is read.
/// </summary>
public static class FluxTransformerLoader
{
    /// <summary>
    /// From a diffusers folder: the <c>transformer/</c> folder itself (config.json + diffusion_pytorch_model.safetensors
    /// or a sharded index) or a model root that contains it.
    /// </summary>
    public static FluxTransformer2DModel FromDiffusersFolder(string folder, ParameterFactory factory)
    {
        var dir = TransformerFolder(folder);
        var config = FluxTransformerConfig.FromJsonFile(Path.Combine(dir, "config.json"));
        using var checkpoint = SafetensorsCheckpoint.Open(dir);
        return Build(config, factory, new CheckpointTensorSource(checkpoint));
    }

    /// <summary>
    /// From one safetensors file: the Black Forest Labs layout (<c>flux1-dev.safetensors</c>, with or without the
    /// <c>model.diffusion_model.</c> prefix) is converted at load time; a file with diffusers keys is read as is.
    /// </summary>
    public static FluxTransformer2DModel FromSingleFile(string file, FluxTransformerConfig config, ParameterFactory factory)
    {
        using var checkpoint = SafetensorsCheckpoint.Open(file);
        ITensorSource source = BflFluxCheckpointLayout.IsBflLayout(checkpoint.Keys)
            ? BflFluxCheckpointLayout.Open(checkpoint, config)
            : new CheckpointTensorSource(checkpoint);
        return Build(config, factory, source);
    }

    /// <summary>A folder (diffusers) or a single file (needs <paramref name="configPath"/>, a diffusers transformer config.json).</summary>
    public static FluxTransformer2DModel Load(string path, ParameterFactory factory, string? configPath = null)
    {
        if (Directory.Exists(path)) return FromDiffusersFolder(path, factory);
        if (configPath is null)
            throw new ArgumentException($"'{path}' is a single checkpoint file: give the transformer config.json that describes it.", nameof(configPath));
        return FromSingleFile(path, FluxTransformerConfig.FromJsonFile(configPath), factory);
    }

    /// <summary>The transformer folder of a diffusers model root, or the folder itself when it holds config.json.</summary>
    public static string TransformerFolder(string folder)
    {
        if (File.Exists(Path.Combine(folder, "config.json"))) return folder;
        var sub = Path.Combine(folder, "transformer");
        if (File.Exists(Path.Combine(sub, "config.json"))) return sub;
        throw new DirectoryNotFoundException($"'{folder}' is not a diffusers transformer folder: neither it nor its 'transformer' subfolder holds config.json.");
    }

    private static FluxTransformer2DModel Build(FluxTransformerConfig config, ParameterFactory factory, ITensorSource source)
    {
        var model = new FluxTransformer2DModel(config, factory);
        try
        {
            if (factory.IsMeta)
                ModuleWeightLoader.Check(model.GetName(), model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape), source);
            else
                ModuleWeightLoader.Load(model, source);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
