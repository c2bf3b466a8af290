using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// 5xx answers are problems too: an engine that fails to load makes /readyz a 503 not-ready problem naming the failure
/// and submissions 503 engine-unavailable (while /healthz stays 200), and an unexpected exception is a 500
/// internal-error problem that does not leak the exception's text.
/// </summary>
public sealed class ServerErrorTests
{
    [Fact]
    public async Task Engine_load_failure_and_unhandled_exceptions_are_problems()
    {
        var settings = ServiceHost.DefaultSettings(ServiceHost.NewDataDirectory());
        var builder = ServiceApp.CreateBuilder([], c => c.AddInMemoryCollection(settings));
        builder.Environment.EnvironmentName = "Testing";
        builder.Services.AddSingleton<IStylizationEngine>(_ => throw new InvalidOperationException("the weights file is corrupt"));
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(2));
        await using var app = ServiceApp.Build(builder);
        app.MapGet("/test/throws", IResult () => throw new InvalidOperationException("secret internals"));
        await app.StartAsync();
        using var client = new HttpClient { BaseAddress = new Uri(app.Urls.First(u => u.StartsWith("http://127.0.0.1", StringComparison.Ordinal)) + "/") };

        // The engine loads in the background: wait until its failure is known.
        var deadline = DateTime.UtcNow.AddSeconds(30);
        string text;
        HttpResponseMessage ready;
        while (true)
        {
            ready = await client.GetAsync("readyz");
            text = await ready.Content.ReadAsStringAsync();
            if (text.Contains("corrupt", StringComparison.Ordinal) || DateTime.UtcNow > deadline) break;
            ready.Dispose();
            await Task.Delay(50);
        }
        using (ready)
        {
            Assert.Contains("the weights file is corrupt", text);
            await Api.AssertProblemAsync(ready, 503, "not-ready");
        }

        using (var submit = await client.PostAsync("v1/stylizations", Api.Form(TestImages.Png(), ("steps", "2"))))
            await Api.AssertProblemAsync(submit, 503, "engine-unavailable");

        using (var boom = await client.GetAsync("test/throws"))
        {
            var body = await boom.Content.ReadAsStringAsync();
            await Api.AssertProblemAsync(boom, 500, "internal-error");
            Assert.DoesNotContain("secret internals", body);
            Assert.Contains(boom.Headers.GetValues("X-Request-Id").Single(), body); // the log has the details under this id
        }

        using var health = await client.GetAsync("healthz");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        await app.StopAsync();
    }
}
