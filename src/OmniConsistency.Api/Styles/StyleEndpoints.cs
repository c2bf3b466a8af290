using System.Security.Cryptography;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;
using OmniConsistency.Api.Endpoints;
using OmniConsistency.Api.Engine;
using OmniConsistency.Api.Jobs;
using OmniConsistency.Api.Options;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Styles;

/// <param name="PreviewUrl">Absolute URL of the style's preview image (built like the job URLs), null when it has none.</param>
public sealed record StyleView(string Name, string DisplayName, IReadOnlyList<string> TriggerWords, double DefaultScale, string? Description,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? PreviewUrl);

public sealed record StyleCatalogView(IReadOnlyList<StyleView> Styles);

/// <summary>/v1/styles: the style catalog (the engine's, or the LoRA folder in the api role), with trigger words, default scale and preview.</summary>
public static class StyleEndpoints
{
    /// <summary>Previews change when an operator replaces a file; clients revalidate with the ETag after this.</summary>
    public const string PreviewCacheControl = "public, max-age=300";

    public static void Map(RouteGroupBuilder v1)
    {
        v1.MapGet("/styles", (HttpContext http, ISubmissionCatalogSource catalog, IOptions<ApiOptions> api) =>
            {
                var baseUrl = StylizationEndpoints.BaseUrl(http, api.Value);
                return Results.Json(new StyleCatalogView(catalog.Require().Styles.Select(s => ToView(s, baseUrl)).ToList()), ApiJson.Options);
            })
            .WithName("ListStyles").WithSummary("The style catalog").Produces<StyleCatalogView>().ProducesProblem(503);

        v1.MapGet("/styles/{name}", (string name, HttpContext http, ISubmissionCatalogSource catalog, IOptions<ApiOptions> api) =>
                Results.Json(ToView(Find(catalog, name), StylizationEndpoints.BaseUrl(http, api.Value)), ApiJson.Options))
            .WithName("GetStyle").WithSummary("One style").Produces<StyleView>().ProducesProblem(404).ProducesProblem(503);

        v1.MapGet("/styles/{name}/preview", Preview)
            .WithName("GetStylePreview").WithSummary("The style's preview image (ETag, conditional GET)")
            .WithDescription("The image file the style's sidecar names, with the content type of its actual format. " +
                             "`previewUrl` of the style points here; 404 `style-preview-not-found` when the style has none.")
            // Stream: Swagger shows a binary body under each image type.
            .Produces(200, typeof(Stream), "image/png", "image/jpeg", "image/webp")
            .Produces(304).ProducesProblem(404).ProducesProblem(503);
    }

    private static IResult Preview(string name, HttpContext http, ISubmissionCatalogSource catalog, ILoggerFactory loggers)
    {
        var style = Find(catalog, name);
        if (style.PreviewPath is null) throw NoPreview(style.Name, "The style has no preview image.");
        StylePreviewImage image;
        try
        {
            // Checked again on every read: the file must still be a PNG/JPEG/WebP whose real path is inside the style folder.
            image = StylePreviewFile.Read(style.PreviewPath);
        }
        catch (StylePreviewUnavailableException e)
        {
            loggers.CreateLogger(typeof(StyleEndpoints)).LogWarning("Preview of style {Style} not served: {Reason}", style.Name, e.Message);
            throw NoPreview(style.Name, "The style's preview image is not available.");
        }
        var etag = new EntityTagHeaderValue($"\"{Convert.ToHexStringLower(SHA256.HashData(image.Bytes).AsSpan(0, 16))}\"");
        http.Response.Headers.XContentTypeOptions = "nosniff";
        http.Response.Headers.CacheControl = PreviewCacheControl;
        if (http.Request.GetTypedHeaders().IfNoneMatch.Any(t => t.Equals(EntityTagHeaderValue.Any) || t.Compare(etag, useStrongComparison: false)))
        {
            http.Response.Headers.ETag = etag.ToString();
            return Results.StatusCode(StatusCodes.Status304NotModified);
        }
        return Results.Bytes(image.Bytes, image.ContentType, entityTag: etag);
    }

    private static StyleInfo Find(ISubmissionCatalogSource catalog, string name) =>
        catalog.Require().Styles.FirstOrDefault(s => string.Equals(s.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new ApiProblemException(404, "style-not-found", "Style not found", $"No style '{Truncate(name)}' in the catalog.");

    private static ApiProblemException NoPreview(string style, string detail) =>
        new(404, "style-preview-not-found", "Style preview not found", $"Style '{style}': {detail}");

    private static StyleView ToView(StyleInfo s, string baseUrl) => new(s.Name, s.DisplayName, s.TriggerWords, s.DefaultScale, s.Description,
        s.PreviewPath is null ? null : $"{baseUrl.TrimEnd('/')}/v1/styles/{Uri.EscapeDataString(s.Name)}/preview");

    private static string Truncate(string s) => s.Length <= 128 ? s : s[..128] + "...";
}
