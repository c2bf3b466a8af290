using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.Configuration;
using OmniConsistency.Api.Options;

namespace OmniConsistency.Api.Tests;

/// <summary>Settings that can't work together stop the start with a message (no database needed).</summary>
public sealed class RoleConfigurationTests
{
    private static string StartError(Dictionary<string, string?> settings, params string[] args)
    {
        settings.TryAdd("Omni:Storage:DataDirectory", Path.GetTempPath());
        var e = Assert.Throws<InvalidOperationException>(() => ServiceApp.CreateBuilder(args, c => c.AddInMemoryCollection(settings)));
        return e.Message;
    }

    [Fact]
    public void Api_and_worker_roles_need_the_shared_store()
    {
        Assert.Contains("Omni:Storage:Provider=postgres", StartError([], "--role", "worker"));
        Assert.Contains("Omni:Storage:Provider=postgres", StartError(new() { ["Omni:Role"] = "api" }));
        Assert.Contains("must be all, api or worker", StartError([], "--role", "gpu"));
    }

    [Fact]
    public void Postgres_needs_a_connection_string_and_api_replicas_a_shared_webhook_secret()
    {
        Assert.Contains("ConnectionStrings:Jobs", StartError(new() { ["Omni:Storage:Provider"] = "postgres" }));
        Assert.Contains("Omni:Webhooks:Secret", StartError(new() { ["Omni:Storage:Provider"] = "postgres", ["ConnectionStrings:Jobs"] = "Host=db" }));
        Assert.Contains("not valid", StartError(new() { ["Omni:Storage:Provider"] = "postgres", ["Omni:Storage:PostgresConnectionString"] = "Nonsense=1" }));
        Assert.Contains("Omni:Blobs:S3:Bucket", StartError(new() { ["Omni:Blobs:Provider"] = "s3" }));
        // A worker signs nothing: no secret needed there.
        ServiceApp.CreateBuilder(["--role", "worker"], c => c.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Omni:Storage:Provider"] = "postgres", ["ConnectionStrings:Jobs"] = "Host=db", ["Omni:Storage:DataDirectory"] = Path.GetTempPath(),
        }));
    }
}

/// <summary>
/// An api-role host and a worker-role host (in this process, separate hosts) sharing one PostgreSQL schema and one
/// blob folder: the API validates against the style folder without loading the model, the worker runs the job, a
/// cancel sent to the API stops the job in the worker at once (NOTIFY), and each role serves only its endpoints.
/// </summary>
public sealed class RoleTests
{
    private static Action<Dictionary<string, string?>> Role(string role, string connectionString, string stylesDirectory) => s =>
    {
        s["Omni:Role"] = role;
        s["Omni:Storage:Provider"] = "postgres";
        s["Omni:Storage:PostgresConnectionString"] = connectionString;
        s["Omni:Engine:LoraFolder"] = stylesDirectory;
        s["Omni:Engine:MaxSide"] = "512";
        // Heartbeats every 20 s: a cancel that lands sooner came through the notification.
        s["Omni:Queue:LeaseDuration"] = "00:01:00";
    };

    private static string StylesFolder()
    {
        var dir = Directory.CreateTempSubdirectory("omni-styles-").FullName;
        File.WriteAllBytes(Path.Combine(dir, "demo.safetensors"), [0]);
        File.WriteAllText(Path.Combine(dir, "demo.json"), """{"display_name": "Demo", "trigger_words": ["demo style"], "default_scale": 0.9}""");
        return dir;
    }

    [Fact]
    public async Task Api_role_validates_without_the_model_and_a_worker_role_runs_the_jobs()
    {
        await using var schema = await PostgresTestSchema.CreateAsync();
        var data = ServiceHost.NewDataDirectory();
        var styles = StylesFolder();
        await using var api = await ServiceHost.StartAsync(data, Role("api", schema.ConnectionString, styles));
        await using var worker = await ServiceHost.StartAsync(data, Role("worker", schema.ConnectionString, styles));

        using (var ready = await api.Client.GetAsync("readyz"))
        {
            var checks = (await ready.Json()).GetProperty("checks");
            Assert.Equal("not used", checks.GetProperty("engine").GetString());
            Assert.Equal("ok: 1 styles", checks.GetProperty("catalog").GetString());
        }
        var style = await (await api.Client.GetAsync("v1/styles/demo")).Json();
        Assert.Equal("demo style", style.GetProperty("triggerWords")[0].GetString());
        await Api.AssertProblemAsync(await api.Client.PostAsync("v1/stylizations", Api.Form(TestImages.Png(), ("style", "ghibli"))), 400, "unknown-style");
        await Api.AssertProblemAsync(await api.Client.PostAsync("v1/stylizations", Api.Form(TestImages.Png(), ("width", "1024"))), 400, "validation-error");
        await Api.AssertProblemAsync(await api.Client.PostAsync("v1/stylizations", Api.Form([1, 2, 3])), 400, "invalid-image");

        var id = (await api.Client.SubmitAsync(TestImages.Png(), ("style", "demo"), ("steps", "3"), ("seed", "11"))).Id();
        var done = await api.Client.WaitForTerminalAsync(id);
        Assert.Equal("succeeded", done.Status());
        Assert.Equal(0.9, done.GetProperty("input").GetProperty("styles")[0].GetProperty("weight").GetDouble()); // the folder's default scale
        using (var result = await api.Client.GetAsync($"v1/stylizations/{id}/result"))
        {
            Assert.Equal(HttpStatusCode.OK, result.StatusCode);
            Assert.Equal("image/png", result.Content.Headers.ContentType!.MediaType);
        }
        Assert.Equal(0, api.Engine.Runs); // the api role never touched the model
        Assert.Equal(1, worker.Engine.Runs);
        Assert.Equal(HttpStatusCode.NotFound, (await worker.Client.GetAsync($"v1/stylizations/{id}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await worker.Client.GetAsync("metrics")).StatusCode);

        // Cancel through the API while the worker holds the job: the worker stops it well before its next heartbeat.
        worker.Engine.Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        worker.Engine.RunStarted = TestEngine.NewSignal<OmniConsistency.Inference.Pipelines.StylizationRequest>();
        var running = (await api.Client.SubmitAsync(TestImages.Png(), ("steps", "5"), ("seed", "12"))).Id();
        await worker.Engine.RunStarted.Task.WaitAsync(TimeSpan.FromSeconds(30));
        var clock = Stopwatch.StartNew();
        using (var cancel = await api.Client.PostAsync($"v1/stylizations/{running}/cancel", null))
            Assert.Equal(HttpStatusCode.Accepted, cancel.StatusCode);
        Assert.Equal("canceled", (await api.Client.WaitForTerminalAsync(running, TimeSpan.FromSeconds(15))).Status());
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"cancel took {clock.Elapsed}");
        worker.Engine.Gate.TrySetResult();
    }
}
