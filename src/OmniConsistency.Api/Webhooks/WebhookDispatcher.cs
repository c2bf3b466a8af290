using System.Net;
using Microsoft.Extensions.Options;
using OmniConsistency.Api.Jobs;
using OmniConsistency.Api.Observability;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Storage;
using Polly;
using Polly.Retry;
using Polly.Timeout;

namespace OmniConsistency.Api.Webhooks;

/// <summary>
/// Sends the webhook outbox. Each due delivery gets a round: a Polly pipeline of quick retries (exponential backoff
/// with jitter, honouring Retry-After) around a per-attempt timeout. A round that does not deliver is written back to
/// the outbox with its next time (exponential with jitter, or the receiver's Retry-After if later), so the schedule
/// survives restarts; after <see cref="WebhookOptions.MaxDeliveryAge"/> or a 410 Gone the delivery is given up.
/// </summary>
public sealed class WebhookDispatcher(
    IJobStore store,
    WebhookHttpClientFactory clients,
    WebhookSigner signer,
    JobSignals signals,
    ServiceMetrics metrics,
    IOptions<WebhookOptions> options,
    TimeProvider time,
    ILogger<WebhookDispatcher> logger) : BackgroundService
{
    private readonly WebhookOptions _options = options.Value;
    private readonly string _dispatcherId = $"{Environment.MachineName}/{Environment.ProcessId}/{Guid.NewGuid():N}";

    /// <summary>The longest Retry-After honoured inside a round; longer ones end the round and are kept in the outbox.</summary>
    private static readonly TimeSpan MaxInRoundRetryAfter = TimeSpan.FromSeconds(30);

    private TimeSpan RoundLease =>
        _options.AttemptTimeout * (_options.RoundRetries + 1) + MaxInRoundRetryAfter * _options.RoundRetries + TimeSpan.FromMinutes(1);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var pipeline = BuildPipeline();
        var inFlight = new List<Task>();
        while (!stoppingToken.IsCancellationRequested)
        {
            inFlight.RemoveAll(t => t.IsCompleted);
            var free = _options.MaxConcurrentDeliveries - inFlight.Count;
            if (free > 0)
            {
                IReadOnlyList<WebhookDelivery> due;
                try
                {
                    due = await store.ClaimDueDeliveriesAsync(_dispatcherId, time.GetUtcNow(), free, RoundLease, stoppingToken);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    logger.LogError(ex, "Reading the webhook outbox failed");
                    due = [];
                }
                foreach (var d in due) inFlight.Add(Task.Run(() => DeliverAsync(pipeline, d, stoppingToken), CancellationToken.None));
                if (due.Count == free) continue;
            }
            var wait = _options.PollInterval;
            var wake = signals.WaitForWebhooksAsync(wait, stoppingToken);
            try { await (inFlight.Count == 0 ? wake : Task.WhenAny(inFlight.Append(wake))); }
            catch (OperationCanceledException) { break; }
        }
        // Deliveries still running are cut off; their lease runs out and they are sent again later (at least once).
        try { await Task.WhenAll(inFlight); } catch { /* already logged per delivery */ }
    }

    private ResiliencePipeline<HttpResponseMessage> BuildPipeline()
    {
        var builder = new ResiliencePipelineBuilder<HttpResponseMessage>();
        if (_options.RoundRetries > 0)
        {
            builder.AddRetry(new RetryStrategyOptions<HttpResponseMessage>
            {
                MaxRetryAttempts = _options.RoundRetries,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = _options.RoundRetryDelay,
                ShouldHandle = args => ValueTask.FromResult(args.Outcome switch
                {
                    { Exception: TimeoutRejectedException } => true,
                    { Exception: HttpRequestException e } => e.InnerException is not WebhookDestinationRefusedException,
                    { Result: { } r } => IsRetryableInRound(r),
                    _ => false,
                }),
                DelayGenerator = args => ValueTask.FromResult(args.Outcome.Result is { } r ? RetryAfter(r) : null),
                OnRetry = args =>
                {
                    metrics.WebhookAttempt("retry");
                    args.Outcome.Result?.Dispose();
                    return ValueTask.CompletedTask;
                },
            });
        }
        builder.AddTimeout(_options.AttemptTimeout);
        return builder.Build();
    }

    private static bool IsRetryableInRound(HttpResponseMessage r)
    {
        var code = (int)r.StatusCode;
        if (code is not (408 or 429) && code < 500) return false;
        return RetryAfter(r) is not { } ra || ra <= MaxInRoundRetryAfter;
    }

    private static TimeSpan? RetryAfter(HttpResponseMessage r)
    {
        var h = r.Headers.RetryAfter;
        if (h?.Delta is { } d) return d < TimeSpan.Zero ? TimeSpan.Zero : d;
        if (h?.Date is { } date) { var d2 = date - DateTimeOffset.UtcNow; return d2 < TimeSpan.Zero ? TimeSpan.Zero : d2; }
        return null;
    }

    private async Task DeliverAsync(ResiliencePipeline<HttpResponseMessage> pipeline, WebhookDelivery delivery, CancellationToken stoppingToken)
    {
        using var jobProperty = Serilog.Context.LogContext.PushProperty("JobId", delivery.JobId);
        using var webhookProperty = Serilog.Context.LogContext.PushProperty("WebhookId", delivery.Id);
        var attempts = 0;
        int? statusCode = null;
        string? error = null;
        TimeSpan? retryAfter = null;
        var delivered = false;
        var gone = false;
        var refused = false;
        try
        {
            using var response = await pipeline.ExecuteAsync(async ct =>
            {
                attempts++;
                var timestamp = time.GetUtcNow().ToUnixTimeSeconds();
                using var request = new HttpRequestMessage(HttpMethod.Post, delivery.Url)
                {
                    Content = new StringContent(delivery.Payload, System.Text.Encoding.UTF8, "application/json"),
                };
                request.Headers.Add("webhook-id", delivery.Id);
                request.Headers.Add("webhook-timestamp", timestamp.ToString(System.Globalization.CultureInfo.InvariantCulture));
                request.Headers.Add("webhook-signature", signer.Sign(delivery.Id, timestamp, delivery.Payload));
                return await clients.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
            }, stoppingToken);
            statusCode = (int)response.StatusCode;
            delivered = response.IsSuccessStatusCode;
            gone = response.StatusCode == HttpStatusCode.Gone;
            retryAfter = RetryAfter(response);
            if (!delivered) error = $"Receiver answered {statusCode} {response.ReasonPhrase}";
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            return; // shutting down: the lease runs out and the delivery is picked up again
        }
        catch (TimeoutRejectedException)
        {
            error = $"No answer within {_options.AttemptTimeout.TotalSeconds:0.#} s";
        }
        catch (HttpRequestException ex) when (ex.InnerException is WebhookDestinationRefusedException refusal)
        {
            refused = true;
            error = refusal.Message;
        }
        catch (Exception ex)
        {
            error = $"{ex.GetType().Name}: {ex.Message}";
        }

        var now = time.GetUtcNow();
        DeliveryRound round;
        if (delivered)
        {
            round = new DeliveryRound(DeliveryStatus.Delivered, attempts, null, statusCode, null, now);
            metrics.WebhookAttempt("delivered");
            logger.LogInformation("Webhook {WebhookId} ({Event}) delivered to {Url} after {Attempts} attempt(s)",
                delivery.Id, delivery.EventType, delivery.Url, delivery.Attempts + attempts);
        }
        else if (gone || refused || now - delivery.CreatedAt >= _options.MaxDeliveryAge)
        {
            var why = gone ? "receiver answered 410 Gone" : refused ? "destination not allowed" : $"not delivered within {_options.MaxDeliveryAge}";
            round = new DeliveryRound(DeliveryStatus.Failed, attempts, null, statusCode, $"{error} (given up: {why})", now);
            metrics.WebhookAttempt(gone ? "gone" : "failed");
            logger.LogWarning("Webhook {WebhookId} ({Event}) to {Url} given up: {Reason}; last error: {Error}",
                delivery.Id, delivery.EventType, delivery.Url, why, error);
        }
        else
        {
            var next = now + NextDelay(delivery.Attempts + attempts, retryAfter);
            round = new DeliveryRound(DeliveryStatus.Pending, attempts, next, statusCode, error, now);
            metrics.WebhookAttempt("retry");
            logger.LogWarning("Webhook {WebhookId} ({Event}) to {Url} failed ({Error}); next attempt at {NextAttempt:o}",
                delivery.Id, delivery.EventType, delivery.Url, error, next);
        }
        try
        {
            await store.RecordDeliveryRoundAsync(delivery.Id, round, CancellationToken.None);
        }
        catch (Exception ex)
        {
            logger.LogError(ex, "Recording webhook {WebhookId} failed; it will be sent again when its lease expires", delivery.Id);
        }
    }

    /// <summary>Exponential in the number of rounds so far, with equal jitter, capped; never earlier than Retry-After.</summary>
    private TimeSpan NextDelay(int totalAttempts, TimeSpan? retryAfter)
    {
        var rounds = Math.Max(1, (int)Math.Ceiling(totalAttempts / (double)(_options.RoundRetries + 1)));
        var exp = _options.RetryBaseDelay.TotalMilliseconds * Math.Pow(2, Math.Min(rounds - 1, 30));
        var capped = Math.Min(exp, _options.MaxRetryDelay.TotalMilliseconds);
        var jittered = capped / 2 + Random.Shared.NextDouble() * capped / 2;
        var delay = TimeSpan.FromMilliseconds(jittered);
        return retryAfter is { } ra && ra > delay ? (ra > _options.MaxDeliveryAge ? _options.MaxDeliveryAge : ra) : delay;
    }
}
