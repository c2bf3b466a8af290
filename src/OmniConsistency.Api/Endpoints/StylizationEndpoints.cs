using System.Globalization;
using System.Text;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;
using OmniConsistency.Api.Engine;
using OmniConsistency.Api.Jobs;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Security;
using OmniConsistency.Api.Storage;

namespace OmniConsistency.Api.Endpoints;

/// <summary>/v1/stylizations: submit, list, read, result, events (SSE), cancel, delete.</summary>
public static class StylizationEndpoints
{
    public const string SubmitOperationId = "CreateStylization";

    public static void Map(RouteGroupBuilder v1)
    {
        v1.MapPost("/stylizations", SubmitAsync)
            .WithName(SubmitOperationId)
            .WithSummary("Submit a photo for stylization")
            .WithDescription("multipart/form-data (image file + fields) or application/json (image as base64). Answers 202 with the job; " +
                             "`Idempotency-Key` makes retries safe; `Prefer: wait=N` holds the answer up to N seconds for the result.")
            .Produces<JobResource>(202).Produces<JobResource>(200)
            .ProducesProblem(400).ProducesProblem(401).ProducesProblem(413).ProducesProblem(415).ProducesProblem(422).ProducesProblem(429).ProducesProblem(503);

        v1.MapGet("/stylizations", ListAsync)
            .WithName(JobListParameters.OperationId).WithSummary("Your jobs, newest first (status filter, cursor pagination)")
            .WithDescription("The jobs of the calling API key (of the open owner without keys), newest first, each as GET /v1/stylizations/{id} " +
                             "shows it (webhook delivery states left out). `status` filters (repeatable or comma-separated), `limit` is 1-100 " +
                             "(default 20). When there are more, `nextCursor` and `next` (also a `Link: rel=\"next\"` header) give the next page; " +
                             "jobs submitted meanwhile never shift or repeat later pages.")
            .Produces<JobPage>().ProducesProblem(400);

        v1.MapGet("/stylizations/{id}", GetAsync)
            .WithName("GetStylization").WithSummary("Job status, progress, timings and links")
            .Produces<JobResource>().ProducesProblem(404);

        v1.MapGet("/stylizations/{id}/result", ResultAsync)
            .WithName("GetStylizationResult").WithSummary("The result image (ETag, conditional GET); with an S3 blob store a 307 to a pre-signed URL")
            .Produces(200, contentType: "image/png", additionalContentTypes: ["image/jpeg", "image/webp"])
            .Produces(307).Produces(304)
            .ProducesProblem(404).ProducesProblem(409).ProducesProblem(410);

        v1.MapGet("/stylizations/{id}/events", EventsAsync)
            .WithName("StreamStylizationEvents")
            .WithSummary("Server-Sent Events: queued, started, progress (per step), completed")
            .WithDescription("Each event has an id (resume with Last-Event-ID), a type and JSON data. The stream ends after `completed`.")
            .Produces(200, contentType: "text/event-stream").ProducesProblem(404);

        v1.MapPost("/stylizations/{id}/cancel", CancelAsync)
            .WithName("CancelStylization").WithSummary("Cancel a queued or running job (running jobs stop between steps)")
            .Produces<JobResource>(200).Produces<JobResource>(202).ProducesProblem(404).ProducesProblem(409);

        v1.MapDelete("/stylizations/{id}", DeleteAsync)
            .WithName("DeleteStylization").WithSummary("Delete a finished job with its photo, result, events and webhook deliveries")
            .WithDescription("Succeeded, failed or canceled jobs only: a queued or running job answers 409 `job-not-finished` (cancel it first). " +
                             "Everything of the job is deleted at once, pending webhook deliveries included; a later GET answers 404.")
            .Produces(204).ProducesProblem(404).ProducesProblem(409);
    }

    public static string BaseUrl(HttpContext http, ApiOptions api) =>
        api.PublicBaseUrl?.TrimEnd('/') ?? $"{http.Request.Scheme}://{http.Request.Host}{http.Request.PathBase}";

    private static ApiProblemException NotFound(string id) =>
        new(404, "not-found", "Job not found", $"No job '{id}' for this API key.");

    private static async Task<IResult> SubmitAsync(HttpContext http, JobService jobs, SubmissionValidator validator, ISubmissionCatalogSource catalog,
        IOptions<LimitsOptions> limits, IOptions<ApiOptions> api, CancellationToken ct)
    {
        var engine = catalog.Require();
        var idempotencyKey = ReadIdempotencyKey(http);
        var wait = ReadPreferWait(http, limits.Value.MaxPreferWaitSeconds);

        var raw = await SubmissionReader.ReadAsync(http.Request, limits.Value, ct);
        var submission = await validator.ValidateAsync(raw, engine, ct);
        var baseUrl = BaseUrl(http, api.Value);
        var outcome = await jobs.SubmitAsync(submission, http.Owner(), idempotencyKey, baseUrl, ct);

        var job = outcome.Job;
        if (wait is { } seconds)
        {
            job = await jobs.WaitForCompletionAsync(job, TimeSpan.FromSeconds(seconds), ct);
            http.Response.Headers["Preference-Applied"] = $"wait={seconds}";
        }
        if (outcome.Replayed) http.Response.Headers["Idempotent-Replayed"] = "true";
        var resource = JobResourceMapper.ToResource(job, baseUrl, job.WebhookUrl is null ? null : await jobs.GetDeliveriesAsync(job.Id, ct));
        http.Response.Headers.Location = resource.Urls.Get;
        return Results.Json(resource, ApiJson.Options, statusCode: job.Status.IsTerminal() ? 200 : 202);
    }

    private static string? ReadIdempotencyKey(HttpContext http)
    {
        if (!http.Request.Headers.TryGetValue("Idempotency-Key", out var values)) return null;
        // The draft defines the header as a structured-field string ("..."); bare tokens are accepted too.
        var key = values.ToString().Trim();
        if (key.Length >= 2 && key[0] == '"' && key[^1] == '"') key = key[1..^1];
        if (key.Length is 0 or > 255 || key.Any(c => c < 0x20 || c > 0x7e))
            throw new ApiProblemException(400, "invalid-idempotency-key", "Invalid Idempotency-Key",
                "The Idempotency-Key must be 1 to 255 printable ASCII characters.");
        return key;
    }

    /// <summary>Prefer: wait=N (RFC 7240), capped at the configured maximum; null when absent.</summary>
    private static int? ReadPreferWait(HttpContext http, int max)
    {
        foreach (var header in http.Request.Headers["Prefer"])
            foreach (var part in (header ?? "").Split([',', ';'], StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
                if (part.StartsWith("wait=", StringComparison.OrdinalIgnoreCase) &&
                    int.TryParse(part[5..], NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && n > 0)
                    return Math.Min(n, max);
        return null;
    }

    private static async Task<IResult> GetAsync(string id, HttpContext http, JobService jobs, IOptions<ApiOptions> api, CancellationToken ct)
    {
        var job = await jobs.GetAsync(id, http.Owner(), ct) ?? throw NotFound(id);
        var deliveries = job.WebhookUrl is null ? null : await jobs.GetDeliveriesAsync(id, ct);
        return Results.Json(JobResourceMapper.ToResource(job, BaseUrl(http, api.Value), deliveries), ApiJson.Options);
    }

    private static async Task<IResult> ListAsync(HttpContext http, JobService jobs, IOptions<ApiOptions> api, CancellationToken ct)
    {
        var query = JobListParameters.Read(http.Request.Query);
        var (page, next) = await jobs.ListAsync(http.Owner(), query.Statuses, query.After, query.Limit, ct);
        var baseUrl = BaseUrl(http, api.Value);
        var cursor = next is null ? null : JobListCursors.Encode(next);
        var nextUrl = cursor is null ? null : query.NextUrl(baseUrl, cursor);
        if (nextUrl is not null) http.Response.Headers.Link = $"<{nextUrl}>; rel=\"next\"";
        var items = page.Select(job => JobResourceMapper.ToResource(job, baseUrl)).ToList();
        return Results.Json(new JobPage { Items = items, NextCursor = cursor, Next = nextUrl }, ApiJson.Options);
    }

    private static async Task<IResult> DeleteAsync(string id, HttpContext http, JobService jobs, IOptions<ApiOptions> api, CancellationToken ct)
    {
        var result = await jobs.DeleteAsync(id, http.Owner(), ct);
        return result.Outcome switch
        {
            DeleteOutcome.NotFound => throw NotFound(id),
            DeleteOutcome.NotFinished => throw new ApiProblemException(409, "job-not-finished", "Job not finished",
                $"The job is {result.Job!.Status.ToWire()}; cancel it first (POST {JobResourceMapper.UrlsFor(BaseUrl(http, api.Value), id).Cancel}) " +
                "and delete it once it has finished."),
            _ => Results.NoContent(),
        };
    }

    private static async Task<IResult> ResultAsync(string id, HttpContext http, JobService jobs, IBlobStore blobs, CancellationToken ct)
    {
        var job = await jobs.GetAsync(id, http.Owner(), ct) ?? throw NotFound(id);
        if (job.Status != JobStatus.Succeeded || job.Result is null)
            throw new ApiProblemException(409, "result-not-ready", "No result",
                job.Status is JobStatus.Queued or JobStatus.Running
                    ? $"The job is {job.Status.ToWire()}; poll it or listen to its events."
                    : $"The job {job.Status.ToWire()} and has no result.");
        if (job.ResultExpired) throw ResultExpired();
        var etag = EntityTagHeaderValue.Parse(job.Result.ETag);
        if (blobs is IBlobUrlSigner signer)
        {
            // Object store: the client fetches the bytes from the bucket with a short-lived URL (a conditional GET that
            // matches is still answered here).
            if (http.Request.GetTypedHeaders().IfNoneMatch.Any(t => t.Compare(etag, useStrongComparison: false) || t.Equals(EntityTagHeaderValue.Any)))
                return Results.StatusCode(304);
            if (await signer.GetReadUrlAsync(job.Result.Blob, job.Result.ContentType, ct) is { } url)
            {
                http.Response.Headers.CacheControl = "private, no-store";
                http.Response.Headers.ETag = job.Result.ETag;
                return Results.Redirect(url.AbsoluteUri, permanent: false, preserveMethod: true);
            }
        }
        var stream = await blobs.OpenReadAsync(job.Result.Blob, ct) ?? throw ResultExpired();
        http.Response.Headers.XContentTypeOptions = "nosniff";
        http.Response.Headers.CacheControl = "private, max-age=3600";
        return Results.Stream(stream, job.Result.ContentType, fileDownloadName: null, entityTag: etag, enableRangeProcessing: false);
    }

    private static ApiProblemException ResultExpired() =>
        new(410, "result-expired", "Result expired", "The result was deleted after the retention period.");

    private static async Task<IResult> CancelAsync(string id, HttpContext http, JobService jobs, IOptions<ApiOptions> api, CancellationToken ct)
    {
        var result = await jobs.CancelAsync(id, http.Owner(), ct);
        return result.Outcome switch
        {
            CancelOutcome.NotFound => throw NotFound(id),
            CancelOutcome.AlreadyFinished => throw new ApiProblemException(409, "job-not-cancelable", "Job already finished",
                $"The job already {result.Job!.Status.ToWire()}."),
            _ => Results.Json(JobResourceMapper.ToResource(result.Job!, BaseUrl(http, api.Value)), ApiJson.Options,
                statusCode: result.Outcome == CancelOutcome.Canceled ? 200 : 202),
        };
    }

    private static async Task EventsAsync(string id, HttpContext http, JobService jobs, IJobStore store, JobSignals signals,
        IOptions<QueueOptions> queue, CancellationToken ct)
    {
        _ = await jobs.GetAsync(id, http.Owner(), ct) ?? throw NotFound(id);
        long last = 0;
        if (long.TryParse(http.Request.Headers["Last-Event-ID"].ToString(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var resume)) last = resume;

        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        http.Response.Headers["X-Accel-Buffering"] = "no";
        await http.Response.Body.FlushAsync(ct);

        var keepAlive = TimeSpan.FromSeconds(15);
        var idleSince = DateTime.UtcNow;
        try
        {
            while (!ct.IsCancellationRequested)
            {
                var events = await store.GetEventsAsync(id, last, 500, ct);
                if (events.Count > 0)
                {
                    var sb = new StringBuilder();
                    var done = false;
                    foreach (var e in events)
                    {
                        sb.Append("id: ").Append(e.Seq).Append("\nevent: ").Append(e.Type).Append("\ndata: ").Append(e.Data).Append("\n\n");
                        last = e.Seq;
                        if (e.Type == "completed") { done = true; break; }
                    }
                    await http.Response.WriteAsync(sb.ToString(), ct);
                    await http.Response.Body.FlushAsync(ct);
                    if (done) return;
                    idleSince = DateTime.UtcNow;
                    continue;
                }
                if (DateTime.UtcNow - idleSince >= keepAlive)
                {
                    // A comment line keeps proxies from closing an idle stream; also notice a job deleted meanwhile.
                    if (await store.GetAsync(id, ct) is null) return;
                    await http.Response.WriteAsync(": keep-alive\n\n", ct);
                    await http.Response.Body.FlushAsync(ct);
                    idleSince = DateTime.UtcNow;
                }
                await signals.WaitForJobChangeAsync(id, queue.Value.PollInterval, ct);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // the client closed the stream
        }
    }
}
