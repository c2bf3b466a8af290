using OmniConsistency.Api.Options;
using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Engine;

public static class EngineRegistration
{
    public const string Section = "Omni:Engine";

    /// <summary>
    /// Registers the stylization engine built from the "Omni:Engine" section (model paths, device, dtype, LoRA folder,
    /// limits; see <see cref="StylizationEngineOptions"/>). With no model configured the engine creates and serves the
    /// built-in random-weight demo model in the data directory. The service resolves it once, off the start-up path
    /// (<see cref="EngineHost"/>), so a slow model load does not delay /healthz; until it has loaded, /readyz answers
    /// 503 and submissions get 503 engine-unavailable. A load failure is reported the same way, with its message.
    /// Tests register their own engine after calling this; the last registration wins.
    /// </summary>
    public static IServiceCollection AddStylizationEngine(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSingleton<IStylizationEngine>(sp =>
        {
            var options = CreateOptions(configuration);
            var engine = StylizationEngine.Create(options, sp.GetRequiredService<ILoggerFactory>());
            if (options.PreloadStyles.Count > 0)
            {
                var failures = engine.PreloadStylesAsync().GetAwaiter().GetResult();
                var logger = sp.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(EngineRegistration));
                foreach (var f in failures) logger.LogWarning("Preloading a style failed: {Reason}", f.Message);
            }
            return engine;
        });
        return services;
    }

    /// <summary>
    /// The engine options: the "Omni:Engine" section, with the data directory and upload limits defaulting to the
    /// service's own (Omni:Storage:DataDirectory, Omni:Limits) so the two layers never disagree.
    /// </summary>
    public static StylizationEngineOptions CreateOptions(IConfiguration configuration)
    {
        var section = configuration.GetSection(Section);
        var values = section.AsEnumerable(makePathsRelative: true).Where(kv => kv.Value is not null).ToList();
        var options = StylizationEngineOptions.FromConfiguration(values);
        var storage = configuration.GetSection(StorageOptions.Section).Get<StorageOptions>() ?? new StorageOptions();
        var limits = configuration.GetSection(LimitsOptions.Section).Get<LimitsOptions>() ?? new LimitsOptions();
        bool Has(string key) => values.Any(kv => string.Equals(kv.Key, key, StringComparison.OrdinalIgnoreCase));
        if (!Has(nameof(StylizationEngineOptions.DataDirectory))) options.DataDirectory = storage.DataPath;
        if (!Has(nameof(StylizationEngineOptions.MaxImageBytes))) options.MaxImageBytes = limits.MaxImageBytes;
        if (!Has(nameof(StylizationEngineOptions.MaxImagePixels))) options.MaxImagePixels = limits.MaxImagePixels;
        if (!Has(nameof(StylizationEngineOptions.MaxImageSide))) options.MaxImageSide = limits.MaxImageSide;
        if (!Has(nameof(StylizationEngineOptions.MaxStyles))) options.MaxStyles = limits.MaxStyles;
        if (!Has(nameof(StylizationEngineOptions.MaxPromptLength))) options.MaxPromptLength = limits.MaxPromptLength;
        options.Validate();
        return options;
    }
}
