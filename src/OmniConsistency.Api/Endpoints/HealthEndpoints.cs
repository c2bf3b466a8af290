using Microsoft.Extensions.Options;
using OmniConsistency.Api.Engine;
using OmniConsistency.Api.Hosting;
using OmniConsistency.Api.Jobs;
using OmniConsistency.Api.Observability;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Storage;

namespace OmniConsistency.Api.Endpoints;

/// <summary>/healthz (alive), /readyz (engine loaded, worker running, store reachable), /metrics (Prometheus), /problems/{slug}.</summary>
public static class HealthEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/healthz", () => Results.Json(new { status = "alive" }))
            .WithTags("Operations").WithSummary("Liveness: the process answers");

        app.MapGet("/readyz", async (HttpContext http, EngineHost engine, WorkerStatus worker, IOptions<WorkerOptions> workerOptions, IJobStore store,
                HostRole host, IServiceProvider services, CancellationToken ct) =>
            {
                var runsWorker = host.Role.RunsWorker();
                var checks = new Dictionary<string, string>
                {
                    ["role"] = host.Role.ToString().ToLowerInvariant(),
                    // The api role never loads the model: it validates against the style folder (catalog check below).
                    ["engine"] = !runsWorker ? "not used" : engine.State == EngineState.Ready ? "ready" : $"{engine.State.ToString().ToLowerInvariant()}{(engine.FailureReason is { } r ? ": " + r : "")}",
                    ["worker"] = !runsWorker || !workerOptions.Value.Enabled ? "disabled" : worker.Running ? "running" : "not running",
                };
                if (services.GetService<FolderCatalogSource>() is { } folder)
                {
                    var catalog = folder.Describe();
                    checks["catalog"] = catalog.StartsWith("error", StringComparison.Ordinal) ? catalog : "ok: " + catalog;
                }
                try
                {
                    await store.GetCountsAsync(ct);
                    checks["store"] = "ok";
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    checks["store"] = $"error: {ex.Message}";
                }
                static bool Healthy(KeyValuePair<string, string> c) =>
                    c.Key == "role" || c.Value is "ready" or "running" or "disabled" or "ok" or "not used" || c.Value.StartsWith("ok: ", StringComparison.Ordinal);
                if (checks.All(Healthy)) return Results.Json(new { status = "ready", checks });
                var problem = ProblemWriter.Create(http, 503, "not-ready", "Not ready",
                    string.Join("; ", checks.Where(c => !Healthy(c)).Select(c => $"{c.Key}: {c.Value}")));
                problem.Extensions["checks"] = checks;
                return Results.Problem(problem);
            })
            .WithTags("Operations").WithSummary("Readiness: engine loaded, worker running, store reachable");

        app.MapGet("/metrics", async (ServiceMetrics metrics, IJobStore store, EngineHost engine, RunningJobs running, CancellationToken ct) =>
                Results.Text(metrics.ToPrometheus(await store.GetCountsAsync(ct), engine.State == EngineState.Ready, running.Count),
                    "text/plain; version=0.0.4; charset=utf-8"))
            .WithTags("Operations").WithSummary("Prometheus metrics");

        app.MapGet("/problems/{slug}", (string slug) =>
                ProblemTypes.Descriptions.TryGetValue(slug, out var text)
                    ? Results.Json(new { type = ProblemTypes.Uri(slug), description = text })
                    : throw new ApiProblemException(404, "not-found", "Unknown problem type", $"No problem type '{slug}'."))
            .WithTags("Operations").WithSummary("What a problem type means");
    }
}
