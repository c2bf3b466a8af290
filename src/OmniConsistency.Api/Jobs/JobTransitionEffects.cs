using System.Text.Json;
using OmniConsistency.Api.Storage;

namespace OmniConsistency.Api.Jobs;

/// <summary>
/// SSE events and webhook messages for each job transition. SSE event types: queued, started, requeued, progress
/// (written by the store), completed (status succeeded | failed | canceled). Webhook types: stylization.started,
/// .succeeded, .failed, .canceled — sent only when the job's event filter includes them.
/// </summary>
public sealed class JobTransitionEffectsFactory : IJobTransitionEffects
{
    public static readonly IReadOnlyList<string> WebhookEventNames = ["started", "succeeded", "failed", "canceled"];

    public JobTransitionEffects For(JobRecord job, JobTransition transition, DateTimeOffset now)
    {
        var resource = JobResourceMapper.ToResource(job, job.BaseUrl);
        var (eventType, data, webhookEvent) = transition switch
        {
            JobTransition.Queued => ("queued", (object)new { status = "queued", queuePosition = job.QueuePosition }, (string?)null),
            JobTransition.Started => ("started", new { status = "running", attempt = job.Attempts }, "started"),
            JobTransition.Requeued => ("requeued", new { status = "queued", attempt = job.Attempts }, null),
            JobTransition.Succeeded => ("completed", new { status = "succeeded", job = resource }, "succeeded"),
            JobTransition.Failed => ("completed", new { status = "failed", job = resource }, "failed"),
            JobTransition.Canceled => ("completed", new { status = "canceled", job = resource }, "canceled"),
            _ => throw new ArgumentOutOfRangeException(nameof(transition)),
        };

        var webhooks = new List<OutboxMessage>();
        if (webhookEvent is not null && job.WebhookUrl is not null && job.WebhookEvents.Contains(webhookEvent))
        {
            var type = "stylization." + webhookEvent;
            // Standard Webhooks payload shape: type, timestamp, data. The data links to the result, never embeds it.
            var payload = JsonSerializer.Serialize(new { type, timestamp = now, data = resource }, ApiJson.Options);
            webhooks.Add(new OutboxMessage("msg_" + Guid.CreateVersion7().ToString("N"), job.Id, type, job.WebhookUrl, payload, now));
        }
        return new JobTransitionEffects(eventType, JsonSerializer.Serialize(data, ApiJson.Options), webhooks);
    }
}
