using System.Net;
using SixLabors.ImageSharp;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// The service exactly as the README's run command starts it — no engine override, so it creates and serves the
/// built-in random-weight model — driven over HTTP on loopback.
/// </summary>
public sealed class BuiltInEngineTests : BuiltInServiceTests
{
    private Task<string> SubmitAsync(int size, int steps, string? style = "demo-style") => Client.SubmitBuiltInAsync(size, steps, style);

    [Fact]
    public async Task Built_in_model_serves_a_real_stylization_end_to_end()
    {
        using (var styles = await Client.GetAsync("v1/styles"))
            Assert.Contains("demo-style", await styles.Content.ReadAsStringAsync());

        var id = await SubmitAsync(128, 2);
        var done = await Client.WaitForTerminalAsync(id, TimeSpan.FromMinutes(2));
        Assert.True(done.Status() == "succeeded", done.ToString());
        using var result = await Client.GetAsync($"v1/stylizations/{id}/result");
        Assert.Equal(HttpStatusCode.OK, result.StatusCode);
        Assert.Equal("image/png", result.Content.Headers.ContentType?.MediaType);
        using var image = Image.Load(await result.Content.ReadAsByteArrayAsync());
        Assert.Equal(128, image.Width);
        Assert.Equal(128, image.Height);

        // The same seed and request reproduce the same image.
        var again = await SubmitAsync(128, 2);
        Assert.Equal("succeeded", (await Client.WaitForTerminalAsync(again, TimeSpan.FromMinutes(2))).Status());
        var first = await (await Client.GetAsync($"v1/stylizations/{id}/result")).Content.ReadAsByteArrayAsync();
        var second = await (await Client.GetAsync($"v1/stylizations/{again}/result")).Content.ReadAsByteArrayAsync();
        Assert.Equal(first, second);

        // The engine's LoRA cache holds the demo style now: its byte gauge reaches /metrics.
        var metrics = await Client.GetStringAsync("metrics");
        var bytes = metrics.Split('\n').Single(l => l.StartsWith("omni_lora_cache_bytes{tier=\"working\"} ", StringComparison.Ordinal));
        Assert.True(double.Parse(bytes.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture) > 0, bytes);
    }
}

public static class BuiltInJobs
{
    /// <summary>Submits a stylization of the test image to the built-in model and returns the accepted job's id.</summary>
    public static async Task<string> SubmitBuiltInAsync(this HttpClient client, int size, int steps, string? style = "demo-style")
    {
        var fields = new List<(string, string)> { ("width", $"{size}"), ("height", $"{size}"), ("steps", $"{steps}"), ("condSize", "64"), ("seed", "7") };
        if (style is not null) fields.Add(("style", style));
        using var response = await client.PostAsync("v1/stylizations", Api.Form(TestImages.Png(), fields.ToArray()));
        var job = await response.Json();
        Assert.True(response.StatusCode == HttpStatusCode.Accepted, job.ToString());
        return job.Id();
    }
}

/// <summary>A test class served by the service as the README's run command starts it: the built-in model, no engine override.</summary>
public abstract class BuiltInServiceTests : IAsyncLifetime
{
    protected ServiceHost Host { get; private set; } = null!;
    protected HttpClient Client { get; private set; } = null!;

    public async ValueTask InitializeAsync()
    {
        Host = await ServiceHost.StartAsync(useBuiltInEngine: true);
        Client = Host.NewClient();
        Client.Timeout = TimeSpan.FromMinutes(2);
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await Host.DisposeAsync();
    }
}
