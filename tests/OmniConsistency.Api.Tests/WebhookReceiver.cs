using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// A real webhook endpoint on loopback (Kestrel). It verifies every request as a Standard Webhooks consumer would
/// (signature over id.timestamp.body with the shared secret, timestamp within 5 minutes) and records what it got.
/// <see cref="Respond"/> decides the status code per attempt, to play a failing receiver.
/// </summary>
public sealed class WebhookReceiver : IAsyncDisposable
{
    public sealed record Received(string Id, string Type, long Timestamp, bool SignatureValid, JsonElement Payload, int AnsweredStatus, DateTime At);

    private readonly WebApplication _app;
    public ConcurrentQueue<Received> Requests { get; } = new();
    /// <summary>Attempt number (1-based, over all requests) → status code.</summary>
    public Func<int, int> Respond { get; set; } = _ => 200;
    /// <summary>Attempt number → Retry-After seconds to send with the answer (null: none).</summary>
    public Func<int, int?> RetryAfter { get; set; } = _ => null;
    private int _attempts;
    public string Url { get; }

    private WebhookReceiver(WebApplication app)
    {
        _app = app;
        Url = app.Urls.First() + "/hooks/omni";
    }

    public static async Task<WebhookReceiver> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        WebhookReceiver? receiver = null;
        app.MapPost("/hooks/omni", async (HttpContext http) =>
        {
            var body = await new StreamReader(http.Request.Body).ReadToEndAsync();
            var id = http.Request.Headers["webhook-id"].ToString();
            var valid = long.TryParse(http.Request.Headers["webhook-timestamp"].ToString(), System.Globalization.CultureInfo.InvariantCulture, out var ts)
                        && Verify(id, ts, body, http.Request.Headers["webhook-signature"].ToString());
            var attempt = Interlocked.Increment(ref receiver!._attempts);
            var status = receiver.Respond(attempt);
            var payload = JsonDocument.Parse(body).RootElement.Clone();
            receiver.Requests.Enqueue(new Received(id, payload.GetProperty("type").GetString()!, ts, valid, payload, status, DateTime.UtcNow));
            if (receiver.RetryAfter(attempt) is { } seconds) http.Response.Headers.RetryAfter = seconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
            return Results.StatusCode(status);
        });
        await app.StartAsync();
        receiver = new WebhookReceiver(app);
        return receiver;
    }

    /// <summary>Standard Webhooks verification, written from the spec (not with the service's code).</summary>
    public static bool Verify(string id, long timestamp, string body, string signatureHeader)
    {
        if (Math.Abs(DateTimeOffset.UtcNow.ToUnixTimeSeconds() - timestamp) > 300) return false;
        var key = Convert.FromBase64String(ServiceHost.WebhookSecret["whsec_".Length..]);
        var expected = Convert.ToBase64String(HMACSHA256.HashData(key, Encoding.UTF8.GetBytes($"{id}.{timestamp}.{body}")));
        // The header may carry several space-separated signatures ("v1,<b64> v1,<b64>").
        return signatureHeader.Split(' ').Any(sig => sig.StartsWith("v1,", StringComparison.Ordinal) &&
            CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(sig[3..]), Encoding.ASCII.GetBytes(expected)));
    }

    public IReadOnlyList<Received> Delivered => Requests.Where(r => r.AnsweredStatus is >= 200 and < 300).ToList();

    public async Task WaitForAsync(Func<WebhookReceiver, bool> condition, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (!condition(this))
        {
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException("Webhook condition not met; received: " + string.Join(", ", Requests.Select(r => $"{r.Type}->{r.AnsweredStatus}")));
            await Task.Delay(25);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
