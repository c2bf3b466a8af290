using System.Reflection;
using Microsoft.Extensions.Options;
using OmniConsistency.Api.Engine;
using OmniConsistency.Api.Jobs;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Storage;

namespace OmniConsistency.Api.Endpoints;

/// <param name="Capacity">Queued jobs accepted before 429 queue-full.</param>
/// <param name="Depth">Jobs waiting now; null when the store cannot be read.</param>
public sealed record QueueInfo(int Capacity, int? Depth);

/// <param name="ApiVersion">The REST API's version (the /v1 of the paths).</param>
/// <param name="ServiceVersion">The build.</param>
/// <param name="StyleCount">Styles in the catalog (GET /v1/styles); null while the catalog is unavailable.</param>
public sealed record ServiceInfo(string ApiVersion, string ServiceVersion, ModelStatus Model, SubmissionLimits Limits, QueueInfo Queue, int? StyleCount);

/// <summary>GET /v1/info: what a client needs to build its UI and check a submission before sending it.</summary>
public static class InfoEndpoints
{
    public const string ApiVersion = "v1";

    private static readonly string ServiceVersion =
        typeof(InfoEndpoints).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(InfoEndpoints).Assembly.GetName().Version?.ToString() ?? "unknown";

    public static void Map(RouteGroupBuilder v1)
    {
        v1.MapGet("/info", GetAsync)
            .WithName("GetServiceInfo")
            .WithSummary("API version, model, request limits and defaults, queue and style count")
            .WithDescription("The limits are the ones submissions are validated against in this process (the engine's and the service's, " +
                             "the stricter of each): a value within them is accepted, one beyond is a 400. While the model loads (or in the " +
                             "api role, which never loads it) they are the configured Omni:Engine limits and `model.state` says why there is " +
                             "no model. Never 503 for a missing model.")
            .Produces<ServiceInfo>();
    }

    private static async Task<IResult> GetAsync(ISubmissionCatalogSource catalog, IJobStore store, IOptions<QueueOptions> queue,
        ILoggerFactory loggers, CancellationToken ct)
    {
        int? depth = null;
        try
        {
            depth = (await store.GetCountsAsync(ct)).Queued;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // /readyz reports the store; the limits are still worth answering.
            loggers.CreateLogger(typeof(InfoEndpoints)).LogWarning("GET /v1/info: the queue depth is unknown: {Error}", ex.Message);
        }
        var current = catalog.Current;
        var info = new ServiceInfo(ApiVersion, ServiceVersion, catalog.Model, current?.Limits ?? catalog.Limits,
            new QueueInfo(queue.Value.Capacity, depth), current?.Styles.Count);
        return Results.Json(info, ApiJson.Options);
    }
}
