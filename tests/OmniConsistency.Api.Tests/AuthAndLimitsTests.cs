using System.Net;
using Microsoft.Extensions.Options;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Security;
using OmniConsistency.Api.Webhooks;

namespace OmniConsistency.Api.Tests;

public sealed class AuthAndLimitsTests
{
    private const string AliceKey = "alice-key-0123456789";
    private const string BobKey = "bob-key-9876543210";
    private const string CarolKey = "carol-key-slow";

    private static void Keys(Dictionary<string, string?> s)
    {
        s["Omni:Auth:ApiKeys:0:Name"] = "alice";
        s["Omni:Auth:ApiKeys:0:Key"] = AliceKey;
        s["Omni:Auth:ApiKeys:1:Name"] = "bob";
        s["Omni:Auth:ApiKeys:1:KeySha256"] = ApiKeyRegistry.Hash(BobKey); // configured as a hash only
        s["Omni:Auth:ApiKeys:2:Name"] = "carol";
        s["Omni:Auth:ApiKeys:2:Key"] = CarolKey;
        s["Omni:Auth:ApiKeys:2:PermitsPerMinute"] = "3";
    }

    [Fact]
    public async Task Keys_are_required_and_jobs_are_visible_only_to_their_key()
    {
        await using var host = await ServiceHost.StartAsync(configure: Keys);
        using var anonymous = host.NewClient();
        using var alice = host.NewClient(AliceKey);
        using var bob = host.NewClient(BobKey, bearer: false);
        using var wrong = host.NewClient("not-a-key");

        using (var r = await anonymous.PostAsync("v1/stylizations", Api.Form(TestImages.Png())))
        {
            await Api.AssertProblemAsync(r, 401, "unauthorized");
            Assert.Equal("Bearer", r.Headers.WwwAuthenticate.Single().Scheme);
        }
        using (var r = await wrong.GetAsync("v1/styles")) await Api.AssertProblemAsync(r, 401, "unauthorized");
        using (var r = await anonymous.GetAsync("healthz")) Assert.Equal(HttpStatusCode.OK, r.StatusCode);

        var job = await alice.SubmitAsync(TestImages.Png(), ("steps", "2"));
        await alice.WaitForTerminalAsync(job.Id());
        Assert.Equal(HttpStatusCode.OK, (await bob.GetAsync("v1/styles")).StatusCode); // X-Api-Key and a hashed key work

        foreach (var path in new[] { "", "/result", "/events" })
            using (var r = await bob.GetAsync($"v1/stylizations/{job.Id()}{path}")) await Api.AssertProblemAsync(r, 404, "not-found");
        using (var r = await bob.PostAsync($"v1/stylizations/{job.Id()}/cancel", null)) await Api.AssertProblemAsync(r, 404, "not-found");
        using (var r = await alice.GetAsync($"v1/stylizations/{job.Id()}/result")) Assert.Equal(HttpStatusCode.OK, r.StatusCode);
    }

    [Fact]
    public async Task Per_key_rate_limit_answers_429_with_retry_after()
    {
        await using var host = await ServiceHost.StartAsync(configure: Keys);
        using var carol = host.NewClient(CarolKey);
        using var alice = host.NewClient(AliceKey);
        for (var i = 0; i < 3; i++) Assert.Equal(HttpStatusCode.OK, (await carol.GetAsync("v1/styles")).StatusCode);
        using var limited = await carol.GetAsync("v1/styles");
        await Api.AssertProblemAsync(limited, 429, "rate-limited");
        Assert.True(limited.Headers.RetryAfter?.Delta > TimeSpan.Zero);
        Assert.Equal(HttpStatusCode.OK, (await alice.GetAsync("v1/styles")).StatusCode); // other keys are not affected
    }

    [Fact]
    public async Task Full_queue_answers_429_queue_full_with_retry_after()
    {
        await using var host = await ServiceHost.StartAsync(configure: s => s["Omni:Queue:Capacity"] = "2");
        host.Engine.Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var running = await host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"));
        await host.Client.WaitForStatusAsync(running.Id(), j => j.Status() == "running");
        await host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"));
        await host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"));
        using var full = await host.Client.PostAsync("v1/stylizations", Api.Form(TestImages.Png(), ("steps", "2")));
        await Api.AssertProblemAsync(full, 429, "queue-full");
        Assert.True(full.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1));
        host.Engine.Gate.TrySetResult();
        await host.Client.WaitForTerminalAsync(running.Id());
        var metrics = await host.Client.GetStringAsync("metrics");
        Assert.Contains("omni_requests_rejected_total{reason=\"queue-full\"} 1", metrics);
    }

    [Fact]
    public async Task Open_service_binds_loopback_only()
    {
        await using var host = await ServiceHost.StartAsync(configure: s => s["urls"] = "http://0.0.0.0:0");
        Assert.StartsWith("http://127.0.0.1:", host.BaseAddress.ToString());
    }

    [Fact]
    public async Task Webhook_connections_are_checked_on_the_connected_address()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var strict = new DestinationPolicy(Microsoft.Extensions.Options.Options.Create(new WebhookOptions()));
        using var guarded = new WebhookHttpClientFactory(strict);
        var byName = receiver.Url.Replace("127.0.0.1", "localhost");
        foreach (var url in new[] { receiver.Url, byName })
        {
            var ex = await Assert.ThrowsAsync<HttpRequestException>(() => guarded.Client.PostAsync(url, new StringContent("{}")));
            Assert.IsType<WebhookDestinationRefusedException>(ex.InnerException);
        }
        Assert.Empty(receiver.Requests);

        var allowLoopback = new DestinationPolicy(Microsoft.Extensions.Options.Options.Create(new WebhookOptions { AllowedNetworks = ["127.0.0.1/32"] }));
        using var allowed = new WebhookHttpClientFactory(allowLoopback);
        receiver.Respond = _ => 302; // redirects are answers, never followed
        using var redirect = await allowed.Client.PostAsync(receiver.Url, new StringContent("""{"type":"t"}"""));
        Assert.Equal(HttpStatusCode.Found, redirect.StatusCode);
    }
}
