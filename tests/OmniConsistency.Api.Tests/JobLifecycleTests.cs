using System.Net;
using System.Text;
using System.Text.Json;

namespace OmniConsistency.Api.Tests;

/// <summary>SSE, cancellation, idempotency, failing jobs, timeouts.</summary>
public sealed class JobLifecycleTests : IAsyncLifetime
{
    private ServiceHost _host = null!;

    public async ValueTask InitializeAsync() => _host = await ServiceHost.StartAsync(configure: s => s["Omni:Worker:JobTimeout"] = "00:00:03");
    public async ValueTask DisposeAsync() => await _host.DisposeAsync();

    private static async Task<List<(long Id, string Type, JsonElement Data)>> ReadSseAsync(HttpClient client, string url, string? lastEventId = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        if (lastEventId is not null) request.Headers.Add("Last-Event-ID", lastEventId);
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var events = new List<(long, string, JsonElement)>();
        long id = 0;
        string? type = null;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.StartsWith("id: ", StringComparison.Ordinal)) id = long.Parse(line[4..]);
            else if (line.StartsWith("event: ", StringComparison.Ordinal)) type = line[7..];
            else if (line.StartsWith("data: ", StringComparison.Ordinal)) events.Add((id, type!, JsonDocument.Parse(line[6..]).RootElement.Clone()));
        }
        return events; // the server ends the stream after "completed"
    }

    [Fact]
    public async Task Sse_shows_queued_started_every_step_and_completed()
    {
        _host.Engine.StepDelay = TimeSpan.FromMilliseconds(30);
        var job = await _host.Client.SubmitAsync(TestImages.Png(), ("steps", "6"));
        var events = await ReadSseAsync(_host.Client, job.GetProperty("urls").GetProperty("events").GetString()!);

        var types = events.Select(e => e.Type).ToList();
        Assert.Equal("queued", types[0]);
        Assert.Equal("started", types[1]);
        Assert.Equal("completed", types[^1]);
        var steps = events.Where(e => e.Type == "progress").Select(e => e.Data.GetProperty("step").GetInt32()).ToList();
        Assert.Equal([1, 2, 3, 4, 5, 6], steps);
        Assert.All(events.Where(e => e.Type == "progress"), e => Assert.Equal(6, e.Data.GetProperty("totalSteps").GetInt32()));
        Assert.Equal("succeeded", events[^1].Data.GetProperty("status").GetString());
        Assert.Equal("succeeded", events[^1].Data.GetProperty("job").GetProperty("status").GetString());
        Assert.True(events.Select(e => e.Id).SequenceEqual(events.Select(e => e.Id).Order()));

        // Resuming after the third event replays only what followed.
        var resumed = await ReadSseAsync(_host.Client, $"v1/stylizations/{job.Id()}/events", events[2].Id.ToString());
        Assert.Equal(events.Skip(3).Select(e => e.Id), resumed.Select(e => e.Id));
    }

    [Fact]
    public async Task Running_job_shows_step_progress_and_cancel_stops_it_between_steps()
    {
        _host.Engine.StepDelay = TimeSpan.FromMilliseconds(100);
        var job = await _host.Client.SubmitAsync(TestImages.Png(), ("steps", "50"));
        var running = await _host.Client.WaitForStatusAsync(job.Id(), j => j.Status() == "running" && j.TryGetProperty("progress", out var p) && p.GetProperty("step").GetInt32() >= 2);
        Assert.Equal(50, running.GetProperty("progress").GetProperty("totalSteps").GetInt32());

        using var cancel = await _host.Client.PostAsync($"v1/stylizations/{job.Id()}/cancel", null);
        Assert.Equal(HttpStatusCode.Accepted, cancel.StatusCode);
        Assert.True((await cancel.Json()).GetProperty("cancelRequested").GetBoolean());

        var done = await _host.Client.WaitForTerminalAsync(job.Id(), TimeSpan.FromSeconds(5));
        Assert.Equal("canceled", done.Status());
        Assert.Equal("/problems/job-canceled", done.GetProperty("error").GetProperty("type").GetString());
        Assert.True(_host.Engine.CompletedBySeed.IsEmpty, "the canceled run must not have finished");

        using var again = await _host.Client.PostAsync($"v1/stylizations/{job.Id()}/cancel", null);
        await Api.AssertProblemAsync(again, 409, "job-not-cancelable");
    }

    [Fact]
    public async Task Queued_job_is_canceled_at_once_and_never_runs()
    {
        _host.Engine.Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var blocker = await _host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"), ("seed", "1"));
        await _host.Client.WaitForStatusAsync(blocker.Id(), j => j.Status() == "running");
        var queued = await _host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"), ("seed", "2"));
        Assert.Equal(1, (await _host.Client.GetJobAsync(queued.Id())).GetProperty("queuePosition").GetInt32());

        using var cancel = await _host.Client.PostAsync($"v1/stylizations/{queued.Id()}/cancel", null);
        Assert.Equal(HttpStatusCode.OK, cancel.StatusCode);
        Assert.Equal("canceled", (await cancel.Json()).Status());

        _host.Engine.Gate.TrySetResult();
        Assert.Equal("succeeded", (await _host.Client.WaitForTerminalAsync(blocker.Id())).Status());
        Assert.Equal("canceled", (await _host.Client.GetJobAsync(queued.Id())).Status());
        Assert.False(_host.Engine.RunsBySeed.ContainsKey(2));
    }

    [Fact]
    public async Task Idempotency_key_returns_the_same_job_and_refuses_a_different_body()
    {
        async Task<HttpResponseMessage> Post(string key, string prompt)
        {
            var request = new HttpRequestMessage(HttpMethod.Post, "v1/stylizations") { Content = Api.Form(TestImages.Png(), ("prompt", prompt), ("steps", "2")) };
            request.Headers.Add("Idempotency-Key", key);
            return await _host.Client.SendAsync(request);
        }
        var key = Guid.NewGuid().ToString();
        using var first = await Post(key, "same");
        using var second = await Post(key, "same");
        Assert.Equal(HttpStatusCode.Accepted, first.StatusCode);
        var firstJob = await first.Json();
        var secondJob = await second.Json();
        Assert.Equal(firstJob.Id(), secondJob.Id());
        // Without a seed the first submission drew one; the replay returns that job, seed included.
        Assert.Equal(firstJob.GetProperty("seed").GetInt64(), secondJob.GetProperty("seed").GetInt64());
        Assert.Equal("true", second.Headers.GetValues("Idempotent-Replayed").Single());

        using var conflict = await Post(key, "different");
        await Api.AssertProblemAsync(conflict, 422, "idempotency-key-reused");

        await _host.Client.WaitForTerminalAsync(firstJob.Id());
        Assert.Equal(1, _host.Engine.Runs);
    }

    [Fact]
    public async Task Failing_job_fails_alone_with_a_reason_and_the_worker_keeps_serving()
    {
        var bad = await _host.Client.SubmitAsync(TestImages.Png(), ("prompt", "please fail"), ("steps", "2"));
        var good = await _host.Client.SubmitAsync(TestImages.Png(), ("prompt", "fine"), ("steps", "2"));
        var failed = await _host.Client.WaitForTerminalAsync(bad.Id());
        Assert.Equal("failed", failed.Status());
        var error = failed.GetProperty("error");
        Assert.Equal("/problems/inference-failed", error.GetProperty("type").GetString());
        Assert.Contains("out of memory", error.GetProperty("detail").GetString());
        Assert.Equal("succeeded", (await _host.Client.WaitForTerminalAsync(good.Id())).Status());

        using var result = await _host.Client.GetAsync($"v1/stylizations/{bad.Id()}/result");
        await Api.AssertProblemAsync(result, 409, "result-not-ready");
    }

    [Fact]
    public async Task Job_running_past_the_timeout_fails_with_job_timeout()
    {
        _host.Engine.StepDelay = TimeSpan.FromMilliseconds(200);
        var job = await _host.Client.SubmitAsync(TestImages.Png(), ("steps", "50"));
        var done = await _host.Client.WaitForTerminalAsync(job.Id(), TimeSpan.FromSeconds(15));
        Assert.Equal("failed", done.Status());
        Assert.Equal("/problems/job-timeout", done.GetProperty("error").GetProperty("type").GetString());
        _host.Engine.StepDelay = TimeSpan.FromMilliseconds(5);
        Assert.Equal("succeeded", (await _host.Client.WaitForTerminalAsync((await _host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"))).Id())).Status());
    }
}
