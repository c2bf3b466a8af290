using System.Text.Json;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// The service log as JSON lines (Serilog's compact format, as with Omni:Logging:Json): the open-service warning at
/// start, the request id on the lines of a request, the job id on every line about a job, and one summary line per job.
/// </summary>
public sealed class LoggingTests
{
    [Fact]
    public async Task Lines_carry_request_and_job_ids_and_each_job_logs_one_summary_line()
    {
        var data = ServiceHost.NewDataDirectory();
        var logFile = Path.Combine(data, "service-log.json");
        string good, bad, submitRequestId, badRequestId;
        await using (var host = await ServiceHost.StartAsync(data, s =>
                     {
                         s["Serilog:MinimumLevel:Default"] = "Information";
                         s["Serilog:WriteTo:0:Name"] = "File";
                         s["Serilog:WriteTo:0:Args:path"] = logFile;
                         s["Serilog:WriteTo:0:Args:formatter"] = "Serilog.Formatting.Compact.RenderedCompactJsonFormatter, Serilog.Formatting.Compact";
                         s.Remove("Serilog:WriteTo:0:Args:outputTemplate");
                     }))
        {
            using (var response = await host.Client.PostAsync("v1/stylizations",
                       Api.Form(TestImages.Png(), ("style", "demo:0.9"), ("width", "96"), ("height", "64"), ("steps", "3"), ("seed", "5"))))
            {
                submitRequestId = response.Headers.GetValues("X-Request-Id").Single();
                good = (await response.Json()).Id();
            }
            bad = (await host.Client.SubmitAsync(TestImages.Png(), ("prompt", "please fail"), ("steps", "2"))).Id();
            using (var refused = await host.Client.PostAsync("v1/stylizations", Api.Form(TestImages.Png(), ("steps", "0"))))
            {
                badRequestId = refused.Headers.GetValues("X-Request-Id").Single();
                Assert.Equal(badRequestId, (await refused.Json()).GetProperty("requestId").GetString());
            }
            await host.Client.WaitForTerminalAsync(good);
            await host.Client.WaitForTerminalAsync(bad);
        }

        List<JsonElement> events;
        using (var reader = new StreamReader(new FileStream(logFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite)))
            events = (await reader.ReadToEndAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();
        static string? Prop(JsonElement e, string name) =>
            e.TryGetProperty(name, out var v) ? v.ValueKind == JsonValueKind.String ? v.GetString() : v.GetRawText() : null;
        string Dump(IEnumerable<JsonElement> es) => string.Join("\n", es.Select(e => e.GetRawText()));

        // Running open is said at start.
        Assert.Contains(events, e => Prop(e, "@l") == "Warning" && Prop(e, "@m")!.Contains("OPEN", StringComparison.Ordinal) && Prop(e, "@m")!.Contains("loopback", StringComparison.Ordinal));

        foreach (var id in new[] { good, bad })
        {
            // Every line that names the job carries its id as a property (JSON output has no text to grep).
            var aboutJob = events.Where(e => Prop(e, "@m")!.Contains(id, StringComparison.Ordinal)).ToList();
            Assert.NotEmpty(aboutJob);
            Assert.All(aboutJob, e => Assert.True(Prop(e, "JobId") == id, "line without its JobId: " + e.GetRawText()));
            // Exactly one summary line per job, with style, size, steps, queue wait and run time.
            var summaries = events.Where(e => Prop(e, "JobId") == id && Prop(e, "RunMs") is not null).ToList();
            Assert.True(summaries.Count == 1, $"summary lines of {id}:\n{Dump(summaries)}");
            var summary = summaries[0];
            foreach (var field in new[] { "Styles", "Size", "Steps", "Seed", "QueueWaitMs", "RunMs", "Status" })
                Assert.True(summary.TryGetProperty(field, out _), $"summary without {field}: {summary.GetRawText()}");
        }
        var goodSummary = events.Single(e => Prop(e, "JobId") == good && Prop(e, "RunMs") is not null);
        Assert.Equal("succeeded", Prop(goodSummary, "Status"));
        Assert.Equal("demo:0.9", Prop(goodSummary, "Styles"));
        Assert.Equal("96x64", Prop(goodSummary, "Size"));
        Assert.Equal("3", Prop(goodSummary, "Steps"));
        Assert.Equal("failed", Prop(events.Single(e => Prop(e, "JobId") == bad && Prop(e, "RunMs") is not null), "Status"));

        // The submit request's lines carry its request id: the request line, and the "queued" line with the job id too.
        var submitLines = events.Where(e => Prop(e, "RequestId") == submitRequestId).ToList();
        Assert.Contains(submitLines, e => Prop(e, "StatusCode") == "202" && Prop(e, "RequestPath") == "/v1/stylizations");
        Assert.Contains(submitLines, e => Prop(e, "JobId") == good);
        // A refused request is logged with its request id (the one its problem carries).
        Assert.Contains(events, e => Prop(e, "RequestId") == badRequestId && Prop(e, "StatusCode") == "400");
    }
}
