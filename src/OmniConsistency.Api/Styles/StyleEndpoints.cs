using OmniConsistency.Api.Endpoints;
using OmniConsistency.Api.Engine;
using OmniConsistency.Api.Jobs;
using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Styles;

public sealed record StyleView(string Name, string DisplayName, IReadOnlyList<string> TriggerWords, double DefaultScale, string? Description);

public sealed record StyleCatalogView(IReadOnlyList<StyleView> Styles);

/// <summary>/v1/styles: the style catalog (the engine's, or the LoRA folder in the api role), with trigger words and default scale.</summary>
public static class StyleEndpoints
{
    public static void Map(RouteGroupBuilder v1)
    {
        v1.MapGet("/styles", (ISubmissionCatalogSource catalog) =>
                Results.Json(new StyleCatalogView(catalog.Require().Styles.Select(ToView).ToList()), ApiJson.Options))
            .WithName("ListStyles").WithSummary("The style catalog").Produces<StyleCatalogView>().ProducesProblem(503);

        v1.MapGet("/styles/{name}", (string name, ISubmissionCatalogSource catalog) =>
            {
                var style = catalog.Require().Styles.FirstOrDefault(s => string.Equals(s.Name, name, StringComparison.OrdinalIgnoreCase))
                            ?? throw new ApiProblemException(404, "style-not-found", "Style not found", $"No style '{name}' in the catalog.");
                return Results.Json(ToView(style), ApiJson.Options);
            })
            .WithName("GetStyle").WithSummary("One style").Produces<StyleView>().ProducesProblem(404).ProducesProblem(503);
    }

    private static StyleView ToView(StyleInfo s) => new(s.Name, s.DisplayName, s.TriggerWords, s.DefaultScale, s.Description);
}
