using System.Text.Json;

namespace OmniConsistency.Api.Tests;

public sealed class WebhookTests
{
    [Fact]
    public async Task Receiver_gets_signed_events_it_can_verify_filtered_per_job()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var host = await ServiceHost.StartAsync();
        var all = await host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"), ("webhookUrl", receiver.Url));
        var onlySucceeded = await host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"), ("webhookUrl", receiver.Url), ("webhookEvents", "succeeded"));

        await receiver.WaitForAsync(r => r.Delivered.Count >= 3);
        await host.Client.WaitForTerminalAsync(onlySucceeded.Id());
        await Task.Delay(300); // nothing else may arrive
        var got = receiver.Requests.ToList();
        Assert.All(got, r => Assert.True(r.SignatureValid, $"bad signature on {r.Id}"));
        Assert.All(got, r => Assert.StartsWith("msg_", r.Id));
        // Deliveries run concurrently, so their order is not promised (as in the Standard Webhooks spec).
        Assert.Equal(["stylization.started", "stylization.succeeded"],
            got.Where(r => r.Payload.GetProperty("data").GetProperty("id").GetString() == all.Id()).Select(r => r.Type).Order());
        Assert.Equal(["stylization.succeeded"],
            got.Where(r => r.Payload.GetProperty("data").GetProperty("id").GetString() == onlySucceeded.Id()).Select(r => r.Type));

        // The payload links to the result instead of embedding it.
        var succeeded = got.First(r => r.Type == "stylization.succeeded").Payload.GetProperty("data");
        Assert.Equal("succeeded", succeeded.GetProperty("status").GetString());
        var resultUrl = succeeded.GetProperty("result").GetProperty("url").GetString()!;
        Assert.StartsWith(host.BaseAddress.ToString(), resultUrl);
        using var image = await host.Client.GetAsync(resultUrl);
        Assert.Equal("image/png", image.Content.Headers.ContentType?.MediaType);

        // A tampered body fails verification (the receiver's check is real).
        var first = got[0];
        Assert.False(WebhookReceiver.Verify(first.Id, first.Timestamp, first.Payload.GetRawText() + " ", "v1,AAAA"));

        // Delivery state is visible on the job.
        await receiver.WaitForAsync(_ => true);
        var job = await host.Client.GetJobAsync(all.Id());
        var deliveries = job.GetProperty("webhook").GetProperty("deliveries").EnumerateArray().ToList();
        Assert.Equal(2, deliveries.Count);
        Assert.All(deliveries, d => Assert.Equal("delivered", d.GetProperty("status").GetString()));
    }

    [Fact]
    public async Task Failing_receiver_is_retried_until_it_succeeds()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.Respond = attempt => attempt <= 4 ? 503 : 200; // four failures over more than one round
        await using var host = await ServiceHost.StartAsync();
        var job = await host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"), ("webhookUrl", receiver.Url), ("webhookEvents", "succeeded"));

        await receiver.WaitForAsync(r => r.Delivered.Count == 1, TimeSpan.FromSeconds(30));
        var attempts = receiver.Requests.ToList();
        Assert.Equal(5, attempts.Count);
        Assert.Single(attempts.Select(a => a.Id).Distinct()); // one message, retried under the same webhook-id
        Assert.All(attempts, a => Assert.True(a.SignatureValid));

        var delivery = await WaitForDeliveryAsync(host, job.Id(), "delivered");
        Assert.Equal(5, delivery.GetProperty("attempts").GetInt32());
        Assert.Equal(200, delivery.GetProperty("lastStatusCode").GetInt32());
    }

    [Fact]
    public async Task Retry_after_from_the_receiver_is_honoured()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.Respond = attempt => attempt == 1 ? 429 : 200;
        receiver.RetryAfter = attempt => attempt == 1 ? 2 : null;
        await using var host = await ServiceHost.StartAsync();
        await host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"), ("webhookUrl", receiver.Url), ("webhookEvents", "succeeded"));
        await receiver.WaitForAsync(r => r.Delivered.Count == 1);
        var attempts = receiver.Requests.ToList();
        Assert.Equal(2, attempts.Count);
        // Without Retry-After the next attempt would come after the 100 ms round delay.
        Assert.True(attempts[1].At - attempts[0].At >= TimeSpan.FromSeconds(1.9), $"retried after {(attempts[1].At - attempts[0].At).TotalMilliseconds} ms");
    }

    [Fact]
    public async Task Gone_stops_delivery()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.Respond = _ => 410;
        await using var host = await ServiceHost.StartAsync();
        var job = await host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"), ("webhookUrl", receiver.Url), ("webhookEvents", "succeeded"));
        var delivery = await WaitForDeliveryAsync(host, job.Id(), "failed");
        Assert.Equal(1, delivery.GetProperty("attempts").GetInt32());
        Assert.Contains("410", delivery.GetProperty("lastError").GetString());
        await Task.Delay(1500);
        Assert.Single(receiver.Requests);
    }

    [Fact]
    public async Task Deliveries_pending_at_shutdown_are_sent_after_restart()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var accept = false;
        receiver.Respond = _ => accept ? 200 : 500;
        var data = ServiceHost.NewDataDirectory();
        string id;
        await using (var first = await ServiceHost.StartAsync(data, s => s["Omni:Webhooks:RetryBaseDelay"] = "00:00:02"))
        {
            id = (await first.Client.SubmitAsync(TestImages.Png(), ("steps", "2"), ("webhookUrl", receiver.Url), ("webhookEvents", "succeeded"))).Id();
            await receiver.WaitForAsync(r => r.Requests.Count >= 1);
            await first.StopAsync();
        }
        var before = receiver.Requests.Count;
        accept = true;
        await using var second = await ServiceHost.StartAsync(data);
        await receiver.WaitForAsync(r => r.Delivered.Count == 1, TimeSpan.FromSeconds(30));
        Assert.True(receiver.Requests.Count > before);
        Assert.Equal(id, receiver.Delivered[0].Payload.GetProperty("data").GetProperty("id").GetString());
        Assert.Equal("delivered", (await WaitForDeliveryAsync(second, id, "delivered")).GetProperty("status").GetString());
    }

    private static async Task<JsonElement> WaitForDeliveryAsync(ServiceHost host, string jobId, string status)
    {
        var job = await host.Client.WaitForStatusAsync(jobId, j =>
            j.TryGetProperty("webhook", out var w) && w.GetProperty("deliveries").EnumerateArray().Any(d => d.GetProperty("status").GetString() == status));
        return job.GetProperty("webhook").GetProperty("deliveries").EnumerateArray().First(d => d.GetProperty("status").GetString() == status);
    }
}
