using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using SixLabors.ImageSharp;

namespace OmniConsistency.Api.Tests;

public sealed class SubmitPollResultTests : IAsyncLifetime
{
    private ServiceHost _host = null!;

    public async ValueTask InitializeAsync() => _host = await ServiceHost.StartAsync();
    public async ValueTask DisposeAsync() => await _host.DisposeAsync();

    [Fact]
    public async Task Multipart_submit_then_poll_then_result()
    {
        var client = _host.Client;
        using var response = await client.PostAsync("v1/stylizations", Api.Form(TestImages.Png(),
            ("style", "demo:0.9"), ("style", "ghibli"), ("prompt", "a cat"), ("width", "96"), ("height", "64"), ("steps", "4"), ("seed", "1234")));
        var job = await response.Json();
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var id = job.Id();
        Assert.Equal(new Uri(_host.BaseAddress, $"v1/stylizations/{id}"), response.Headers.Location);
        Assert.Equal("queued", job.Status());
        Assert.True(job.GetProperty("queuePosition").GetInt32() >= 1);
        Assert.Equal(1234, job.GetProperty("seed").GetInt64());
        var urls = job.GetProperty("urls");
        foreach (var (name, suffix) in new[] { ("get", ""), ("result", "/result"), ("cancel", "/cancel"), ("events", "/events") })
            Assert.Equal(new Uri(_host.BaseAddress, $"v1/stylizations/{id}{suffix}").ToString(), urls.GetProperty(name).GetString());
        var styles = job.GetProperty("input").GetProperty("styles");
        Assert.Equal("demo", styles[0].GetProperty("name").GetString());
        Assert.Equal(0.9, styles[0].GetProperty("weight").GetDouble());
        Assert.Equal(0.8, styles[1].GetProperty("weight").GetDouble()); // the catalog's default scale

        var done = await client.WaitForTerminalAsync(id);
        Assert.Equal("succeeded", done.Status());
        Assert.True(done.GetProperty("timings").GetProperty("queueWaitMs").GetInt64() >= 0);
        Assert.True(done.TryGetProperty("completedAt", out _));
        var result = done.GetProperty("result");
        Assert.Equal(96, result.GetProperty("width").GetInt32());
        Assert.Equal(64, result.GetProperty("height").GetInt32());
        Assert.Contains("Studio Ghibli style", result.GetProperty("effectivePrompt").GetString());

        using var image = await client.GetAsync(urls.GetProperty("result").GetString());
        Assert.Equal(HttpStatusCode.OK, image.StatusCode);
        Assert.Equal("image/png", image.Content.Headers.ContentType?.MediaType);
        Assert.Equal("nosniff", image.Headers.GetValues("X-Content-Type-Options").Single());
        var etag = image.Headers.ETag;
        Assert.NotNull(etag);
        var bytes = await image.Content.ReadAsByteArrayAsync();
        using (var decoded = Image.Load(bytes))
        {
            Assert.Equal(96, decoded.Width);
            Assert.Equal(64, decoded.Height);
        }

        using var conditional = new HttpRequestMessage(HttpMethod.Get, urls.GetProperty("result").GetString());
        conditional.Headers.IfNoneMatch.Add(etag!);
        using var notModified = await client.SendAsync(conditional);
        Assert.Equal(HttpStatusCode.NotModified, notModified.StatusCode);
    }

    [Fact]
    public async Task Json_submit_with_base64_image_and_prefer_wait_returns_the_finished_job()
    {
        var body = JsonSerializer.Serialize(new
        {
            image = "data:image/png;base64," + Convert.ToBase64String(TestImages.Png(80, 40)),
            styles = new[] { new { name = "demo", weight = 1.0 } },
            steps = 3,
            outputFormat = "jpeg",
        });
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/stylizations") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        request.Headers.Add("Prefer", "wait=20");
        using var response = await _host.Client.SendAsync(request);
        var job = await response.Json();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("wait=20", response.Headers.GetValues("Preference-Applied").Single());
        Assert.Equal("succeeded", job.Status());
        Assert.True(job.GetProperty("seed").GetInt64() >= 0); // random seed, always returned
        // Default size: the photo's 2:1 aspect ratio, on the 16-pixel grid.
        var result = job.GetProperty("result");
        Assert.InRange(result.GetProperty("width").GetInt32() / (double)result.GetProperty("height").GetInt32(), 1.7, 2.3);
        Assert.Equal(0, result.GetProperty("width").GetInt32() % 16);

        using var image = await _host.Client.GetAsync(job.GetProperty("urls").GetProperty("result").GetString());
        Assert.Equal("image/jpeg", image.Content.Headers.ContentType?.MediaType);
        Image.Load(await image.Content.ReadAsByteArrayAsync()).Dispose();
    }

    [Fact]
    public async Task Form_as_swagger_ui_sends_it_with_empty_optional_fields_is_accepted()
    {
        // Swagger UI "Try it out" sends every field, the untouched ones empty (checked with headless Chromium).
        var job = await _host.Client.SubmitAsync(TestImages.Png(),
            ("condSize", "512"), ("prompt", "from swagger ui"), ("width", ""), ("height", ""), ("steps", "4"), ("webhookEvents", ""),
            ("style", "demo:0.7"), ("seed", ""), ("conditionFit", "stretch"), ("outputFormat", "png"), ("guidance", "3.5"), ("webhookUrl", ""));
        Assert.Equal("succeeded", (await _host.Client.WaitForTerminalAsync(job.Id())).Status());
    }

    [Fact]
    public async Task Result_before_completion_is_a_conflict_problem()
    {
        _host.Engine.Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            var job = await _host.Client.SubmitAsync(TestImages.Png(), ("steps", "3"));
            using var r = await _host.Client.GetAsync($"v1/stylizations/{job.Id()}/result");
            await Api.AssertProblemAsync(r, 409, "result-not-ready");
        }
        finally
        {
            _host.Engine.Gate.TrySetResult();
        }
    }

    [Fact]
    public async Task Styles_catalog_lists_trigger_words_and_default_scale()
    {
        var list = await (await _host.Client.GetAsync("v1/styles")).Json();
        var ghibli = list.GetProperty("styles").EnumerateArray().Single(s => s.GetProperty("name").GetString() == "ghibli");
        Assert.Equal(0.8, ghibli.GetProperty("defaultScale").GetDouble());
        Assert.Equal("Studio Ghibli style", ghibli.GetProperty("triggerWords")[0].GetString());

        var one = await (await _host.Client.GetAsync("v1/styles/demo")).Json();
        Assert.Equal("Demo", one.GetProperty("displayName").GetString());
        using var missing = await _host.Client.GetAsync("v1/styles/nope");
        await Api.AssertProblemAsync(missing, 404, "style-not-found");
    }

    [Fact]
    public async Task Health_readiness_metrics_and_swagger()
    {
        Assert.Equal(HttpStatusCode.OK, (await _host.Client.GetAsync("healthz")).StatusCode);
        var ready = await (await _host.Client.GetAsync("readyz")).Json();
        Assert.Equal("ready", ready.GetProperty("status").GetString());

        await _host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"), ("prompt", "metrics"));
        using var metrics = await _host.Client.GetAsync("metrics");
        Assert.StartsWith("text/plain", metrics.Content.Headers.ContentType?.ToString());
        var text = await metrics.Content.ReadAsStringAsync();
        await _host.Client.WaitForTerminalAsync((await _host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"))).Id());
        text = await _host.Client.GetStringAsync("metrics");
        foreach (var name in new[] { "omni_queue_depth", "omni_jobs{state=\"queued\"}", "omni_step_seconds_count", "omni_webhook_attempts_total", "omni_engine_ready 1",
                     "omni_test_lora_cache_hits_total" })
            Assert.Contains(name, text);

        var swagger = await (await _host.Client.GetAsync("swagger/v1/swagger.json")).Json();
        var post = swagger.GetProperty("paths").GetProperty("/v1/stylizations").GetProperty("post");
        var content = post.GetProperty("requestBody").GetProperty("content");
        var image = content.GetProperty("multipart/form-data").GetProperty("schema").GetProperty("properties").GetProperty("image");
        Assert.Equal("binary", image.GetProperty("format").GetString());
        Assert.True(content.GetProperty("application/json").TryGetProperty("example", out _));
        foreach (var path in new[] { "/v1/stylizations/{id}", "/v1/stylizations/{id}/result", "/v1/stylizations/{id}/events", "/v1/stylizations/{id}/cancel", "/v1/styles", "/v1/styles/{name}" })
            Assert.True(swagger.GetProperty("paths").TryGetProperty(path, out _), path);
        using var ui = await _host.Client.GetAsync("swagger/index.html");
        Assert.Equal(HttpStatusCode.OK, ui.StatusCode);
    }
}
