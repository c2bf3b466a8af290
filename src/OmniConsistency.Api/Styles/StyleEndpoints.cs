using OmniConsistency.Api.Endpoints;
using OmniConsistency.Api.Engine;
using OmniConsistency.Api.Jobs;
using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Styles;

public sealed record StyleView(string Name, string DisplayName, IReadOnlyList<string> TriggerWords, double DefaultScale, string? Description);

public sealed record StyleCatalogView(IReadOnlyList<StyleView> Styles);

/// <summary>/v1/styles: the engine's style catalog (LoRA folder), with trigger words and default scale.</summary>
public static class StyleEndpoints
{
    public static void Map(RouteGroupBuilder v1)
    {
        v1.MapGet("/styles", (EngineHost engine) =>
                Results.Json(new StyleCatalogView(Engine(engine).Styles.Select(ToView).ToList()), ApiJson.Options))
            .WithName("ListStyles").WithSummary("The style catalog").Produces<StyleCatalogView>().ProducesProblem(503);

        v1.MapGet("/styles/{name}", (string name, EngineHost engine) =>
            {
                var style = Engine(engine).Styles.FirstOrDefault(s => string.Equals(s.Name, name, StringComparison.OrdinalIgnoreCase))
                            ?? throw new ApiProblemException(404, "style-not-found", "Style not found", $"No style '{name}' in the catalog.");
                return Results.Json(ToView(style), ApiJson.Options);
            })
            .WithName("GetStyle").WithSummary("One style").Produces<StyleView>().ProducesProblem(404).ProducesProblem(503);
    }

    private static IStylizationEngine Engine(EngineHost host) =>
        host.Engine ?? throw new ApiProblemException(503, "engine-unavailable", "Engine unavailable", host.FailureReason ?? "The model is still loading.",
            retryAfter: TimeSpan.FromSeconds(10));

    private static StyleView ToView(StyleInfo s) => new(s.Name, s.DisplayName, s.TriggerWords, s.DefaultScale, s.Description);
}
