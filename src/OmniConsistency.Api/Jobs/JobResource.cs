using System.Text.Json.Serialization;
using OmniConsistency.Api.Storage;
using OmniConsistency.Api.Endpoints;

namespace OmniConsistency.Api.Jobs;

// The job as clients see it (GET /v1/stylizations/{id}, POST answers, webhook payload data).

public sealed record JobUrls(string Get, string Result, string Cancel, string Events);

public sealed record StyleWeight(string Name, double Weight);

public sealed record JobInput(
    IReadOnlyList<StyleWeight> Styles, string? Prompt, int? Width, int? Height, int Steps, double Guidance,
    long Seed, int CondSize, string ConditionFit, string OutputFormat);

public sealed record JobProgressView(string Phase, int Step, int TotalSteps);

public sealed record JobTimings(long? QueueWaitMs, long? InferenceMs);

public sealed record JobResultView(string Url, string ContentType, int Width, int Height, long Bytes, string EffectivePrompt,
    IReadOnlyList<string> Warnings, DateTimeOffset? ExpiresAt, bool Expired);

public sealed record JobErrorView(string Type, string Title, int Status, string Detail);

public sealed record WebhookDeliveryView(string Id, string Event, string Status, int Attempts, int? LastStatusCode, string? LastError,
    DateTimeOffset? NextAttemptAt, DateTimeOffset? DeliveredAt);

public sealed record JobWebhookView(string Url, IReadOnlyList<string> Events,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<WebhookDeliveryView>? Deliveries);

public sealed record JobResource
{
    public required string Id { get; init; }
    public required string Status { get; init; }
    public int? QueuePosition { get; init; }
    public JobProgressView? Progress { get; init; }
    public bool CancelRequested { get; init; }
    public required long Seed { get; init; }
    public required JobInput Input { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset? StartedAt { get; init; }
    public DateTimeOffset? CompletedAt { get; init; }
    public required JobTimings Timings { get; init; }
    public int Attempts { get; init; }
    public JobResultView? Result { get; init; }
    public JobErrorView? Error { get; init; }
    public JobWebhookView? Webhook { get; init; }
    public required JobUrls Urls { get; init; }
}

public static class JobResourceMapper
{
    public static JobUrls UrlsFor(string baseUrl, string id)
    {
        var self = $"{baseUrl.TrimEnd('/')}/v1/stylizations/{Uri.EscapeDataString(id)}";
        return new JobUrls(self, self + "/result", self + "/cancel", self + "/events");
    }

    public static int HttpStatusOf(string errorType) => errorType switch
    {
        "job-timeout" => 504,
        "inference-failed" or "job-interrupted" or "internal-error" => 500,
        "job-canceled" => 409,
        _ => 400,
    };

    public static JobResource ToResource(JobRecord job, string baseUrl, IReadOnlyList<WebhookDelivery>? deliveries = null)
    {
        var urls = UrlsFor(baseUrl, job.Id);
        var p = job.Parameters;
        return new JobResource
        {
            Id = job.Id,
            Status = job.Status.ToWire(),
            QueuePosition = job.Status == JobStatus.Queued ? job.QueuePosition : null,
            Progress = job.Status == JobStatus.Running && job.Progress is { } pr ? new JobProgressView(pr.Phase, pr.Step, pr.TotalSteps) : null,
            CancelRequested = job.CancelRequested,
            Seed = p.Seed,
            Input = new JobInput(p.Styles.Select(s => new StyleWeight(s.Name, s.Weight)).ToList(), p.Prompt, p.Width, p.Height, p.Steps,
                p.Guidance, p.Seed, p.CondSize, p.ConditionFit.ToString().ToLowerInvariant(), p.OutputFormat.ToString().ToLowerInvariant()),
            CreatedAt = job.CreatedAt,
            StartedAt = job.StartedAt,
            CompletedAt = job.FinishedAt,
            Timings = new JobTimings(job.QueueWaitMs, job.InferenceMs),
            Attempts = job.Attempts,
            Result = job.Result is { } r
                ? new JobResultView(urls.Result, r.ContentType, r.Width, r.Height, r.Bytes, r.EffectivePrompt, r.Warnings, job.ResultExpiresAt, job.ResultExpired)
                : null,
            Error = job.Error is { } e ? new JobErrorView(ProblemTypes.Uri(e.Type), e.Title, HttpStatusOf(e.Type), e.Detail) : null,
            Webhook = job.WebhookUrl is null ? null : new JobWebhookView(job.WebhookUrl, job.WebhookEvents,
                deliveries?.Select(d => new WebhookDeliveryView(d.Id, d.EventType, d.Status.ToString().ToLowerInvariant(), d.Attempts,
                    d.LastStatusCode, d.LastError, d.Status == DeliveryStatus.Pending ? d.NextAttemptAt : null, d.DeliveredAt)).ToList()),
            Urls = urls,
        };
    }
}
