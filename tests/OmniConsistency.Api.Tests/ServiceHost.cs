using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// The real service on Kestrel at 127.0.0.1:&lt;free port&gt;, with its own data directory and a <see cref="TestEngine"/>.
/// Two hosts started one after the other on the same data directory see the same SQLite file (restart tests).
/// </summary>
public sealed class ServiceHost : IAsyncDisposable
{
    public const string WebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    private readonly WebApplication _app;
    private bool _stopped;

    public TestEngine Engine { get; }
    public string DataDirectory { get; }
    public Uri BaseAddress { get; }
    public HttpClient Client { get; }
    public IServiceProvider Services => _app.Services;

    private ServiceHost(WebApplication app, TestEngine engine, string dataDirectory)
    {
        _app = app;
        Engine = engine;
        DataDirectory = dataDirectory;
        BaseAddress = new Uri(app.Urls.First(u => u.StartsWith("http://127.0.0.1", StringComparison.Ordinal)) + "/");
        Client = NewClient();
    }

    private static readonly System.Collections.Concurrent.ConcurrentBag<string> CreatedDirectories = CleanUpAtExit();

    private static System.Collections.Concurrent.ConcurrentBag<string> CleanUpAtExit()
    {
        var dirs = new System.Collections.Concurrent.ConcurrentBag<string>();
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var d in dirs)
                try { Directory.Delete(d, recursive: true); } catch (Exception) { /* best effort */ }
        };
        return dirs;
    }

    /// <summary>A fresh data directory, deleted when the test process exits (restart tests share one between hosts).</summary>
    public static string NewDataDirectory()
    {
        var dir = Directory.CreateTempSubdirectory("omni-api-test-").FullName;
        CreatedDirectories.Add(dir);
        return dir;
    }

    /// <summary>Default test settings: short polls and retries, webhooks allowed to reach loopback only.</summary>
    public static Dictionary<string, string?> DefaultSettings(string dataDirectory) => new()
    {
        ["urls"] = "http://127.0.0.1:0",
        ["Serilog:MinimumLevel:Default"] = Environment.GetEnvironmentVariable("OMNI_TEST_LOG_LEVEL") ?? "Warning",
        ["Omni:Storage:DataDirectory"] = dataDirectory,
        ["Omni:Queue:PollInterval"] = "00:00:00.200",
        ["Omni:Queue:Capacity"] = "50",
        ["Omni:Webhooks:Secret"] = WebhookSecret,
        ["Omni:Webhooks:AllowedNetworks:0"] = "127.0.0.1/32",
        ["Omni:Webhooks:RoundRetries"] = "1",
        ["Omni:Webhooks:RoundRetryDelay"] = "00:00:00.100",
        ["Omni:Webhooks:RetryBaseDelay"] = "00:00:00.300",
        ["Omni:Webhooks:MaxRetryDelay"] = "00:00:01",
        ["Omni:Webhooks:AttemptTimeout"] = "00:00:05",
        ["Omni:Webhooks:PollInterval"] = "00:00:00.200",
        ["Omni:Limits:MaxRequestBytes"] = "1048576",
        ["Omni:Limits:MaxImageBytes"] = "262144",
        ["Omni:Limits:MaxImagePixels"] = "4000000",
        ["Omni:Limits:MaxImageSide"] = "4096",
        ["Omni:RateLimit:PermitsPerMinute"] = "100000",
    };

    /// <param name="useBuiltInEngine">Serve the real built-in random-weight model (the README's run command) instead of
    /// the <see cref="TestEngine"/>; <see cref="Engine"/> is then unused.</param>
    public static async Task<ServiceHost> StartAsync(string? dataDirectory = null, Action<Dictionary<string, string?>>? configure = null,
        TestEngine? engine = null, bool useBuiltInEngine = false)
    {
        dataDirectory ??= NewDataDirectory();
        engine ??= new TestEngine();
        var settings = DefaultSettings(dataDirectory);
        if (Environment.GetEnvironmentVariable("OMNI_TEST_LOG_FILE") is { Length: > 0 } logFile)
        {
            // For looking at the service's log while debugging tests.
            settings["Serilog:WriteTo:0:Name"] = "File";
            settings["Serilog:WriteTo:0:Args:path"] = logFile;
            settings["Serilog:WriteTo:0:Args:outputTemplate"] = "[{Timestamp:HH:mm:ss.fff} {Level:u3}] {Message:lj}{Correlation}{NewLine}{Exception}";
        }
        configure?.Invoke(settings);
        var builder = ServiceApp.CreateBuilder([], config => config.AddInMemoryCollection(settings));
        builder.Environment.EnvironmentName = "Testing";
        if (!useBuiltInEngine) builder.Services.AddSingleton<IStylizationEngine>(engine);
        // An abrupt stop must not wait for a frozen job.
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(2));
        var app = ServiceApp.Build(builder);
        await app.StartAsync();
        var host = new ServiceHost(app, engine, dataDirectory);
        await host.WaitReadyAsync();
        return host;
    }

    public HttpClient NewClient(string? apiKey = null, bool bearer = true)
    {
        var client = new HttpClient { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        if (apiKey is not null)
        {
            if (bearer) client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
            else client.DefaultRequestHeaders.Add("X-Api-Key", apiKey);
        }
        return client;
    }

    private async Task WaitReadyAsync()
    {
        // The built-in model is created and loaded at start (about a second; longer on a loaded machine).
        var deadline = DateTime.UtcNow.AddSeconds(120);
        while (DateTime.UtcNow < deadline)
        {
            using var r = await Client.GetAsync("readyz");
            if (r.IsSuccessStatusCode) return;
            await Task.Delay(50);
        }
        throw new TimeoutException("The service did not become ready.");
    }

    /// <summary>Stops like a killed process as far as the store can tell: a frozen job never writes again.</summary>
    public async Task StopAsync()
    {
        if (_stopped) return;
        _stopped = true;
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await StopAsync();
    }
}

/// <summary>HTTP helpers shared by the tests.</summary>
public static class Api
{
    public static MultipartFormDataContent Form(byte[] image, params (string Name, string Value)[] fields)
    {
        var form = new MultipartFormDataContent();
        var file = new ByteArrayContent(image);
        file.Headers.ContentType = new MediaTypeHeaderValue("image/png");
        form.Add(file, "image", "photo.png");
        foreach (var (name, value) in fields) form.Add(new StringContent(value), name);
        return form;
    }

    public static async Task<JsonElement> Json(this HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        try { return JsonDocument.Parse(text).RootElement.Clone(); }
        catch (JsonException) { throw new Xunit.Sdk.XunitException($"Not JSON ({(int)response.StatusCode}): {text}"); }
    }

    public static async Task<JsonElement> SubmitAsync(this HttpClient client, byte[] image, params (string Name, string Value)[] fields)
    {
        using var response = await client.PostAsync("v1/stylizations", Form(image, fields));
        var body = await response.Json();
        Assert.True(response.StatusCode == System.Net.HttpStatusCode.Accepted, $"Submit answered {(int)response.StatusCode}: {body}");
        return body;
    }

    public static async Task<JsonElement> GetJobAsync(this HttpClient client, string id)
    {
        using var response = await client.GetAsync($"v1/stylizations/{id}");
        var body = await response.Json();
        Assert.True(response.IsSuccessStatusCode, $"GET job answered {(int)response.StatusCode}: {body}");
        return body;
    }

    public static async Task<JsonElement> WaitForStatusAsync(this HttpClient client, string id, Func<JsonElement, bool> until, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        JsonElement job;
        do
        {
            job = await client.GetJobAsync(id);
            if (until(job)) return job;
            await Task.Delay(25);
        } while (DateTime.UtcNow < deadline);
        throw new TimeoutException($"Job {id} did not reach the expected state: {job}");
    }

    public static Task<JsonElement> WaitForTerminalAsync(this HttpClient client, string id, TimeSpan? timeout = null) =>
        client.WaitForStatusAsync(id, j => j.GetProperty("status").GetString() is "succeeded" or "failed" or "canceled", timeout);

    public static string Status(this JsonElement job) => job.GetProperty("status").GetString()!;
    public static string Id(this JsonElement job) => job.GetProperty("id").GetString()!;

    public static async Task AssertProblemAsync(HttpResponseMessage response, int status, string typeSlug)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True((int)response.StatusCode == status, $"Expected {status} {typeSlug}, got {(int)response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonDocument.Parse(text).RootElement;
        Assert.Equal("/problems/" + typeSlug, problem.GetProperty("type").GetString());
        Assert.Equal(status, problem.GetProperty("status").GetInt32());
        Assert.False(string.IsNullOrEmpty(problem.GetProperty("title").GetString()));
    }
}
