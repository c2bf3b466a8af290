using System.Text.Json;
using Microsoft.Data.Sqlite;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// The process dies with jobs queued and running (the engine freezes mid-job and the host is torn down without
/// the worker writing anything, as after a kill); a new process on the same data directory finishes every job
/// exactly once.
/// </summary>
public sealed class RestartTests
{
    [Fact]
    public async Task Jobs_queued_and_running_at_a_crash_finish_exactly_once_after_restart()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var data = ServiceHost.NewDataDirectory();
        var frozen = new TestEngine { Freeze = true };
        var ids = new List<string>();
        await using (var first = await ServiceHost.StartAsync(data, engine: frozen))
        {
            for (var seed = 1; seed <= 5; seed++)
                ids.Add((await first.Client.SubmitAsync(TestImages.Png(), ("steps", "3"), ("seed", seed.ToString()), ("webhookUrl", receiver.Url))).Id());
            await frozen.RunStarted.Task.WaitAsync(TimeSpan.FromSeconds(10));
            var running = await first.Client.GetJobAsync(ids[0]);
            Assert.Equal("running", running.Status());
            Assert.Equal("queued", (await first.Client.GetJobAsync(ids[4])).Status());
            await first.StopAsync(); // the frozen job never returns: nothing is written for it
        }
        Assert.Equal(1, frozen.Runs);
        Assert.Equal("running", ReadStatus(data, ids[0]));

        await using var second = await ServiceHost.StartAsync(data);
        foreach (var id in ids) Assert.Equal("succeeded", (await second.Client.WaitForTerminalAsync(id)).Status());

        // Each job ran once in the new process and completed once.
        Assert.Equal(5, second.Engine.Runs);
        Assert.All(Enumerable.Range(1, 5), seed => Assert.Equal(1, second.Engine.CompletedBySeed[seed]));
        Assert.Equal(2, (await second.Client.GetJobAsync(ids[0])).GetProperty("attempts").GetInt32());
        foreach (var id in ids)
        {
            var events = await ReadEventTypesAsync(second, id);
            Assert.Equal(1, events.Count(t => t == "completed"));
        }
        Assert.Contains("requeued", await ReadEventTypesAsync(second, ids[0]));

        // Exactly one succeeded webhook per job.
        await receiver.WaitForAsync(r => r.Delivered.Count(d => d.Type == "stylization.succeeded") == 5);
        await Task.Delay(500);
        var succeeded = receiver.Delivered.Where(d => d.Type == "stylization.succeeded")
            .Select(d => d.Payload.GetProperty("data").GetProperty("id").GetString()).ToList();
        Assert.Equal(ids.Order(), succeeded.Order());
    }

    [Fact]
    public async Task A_job_interrupted_more_than_max_attempts_fails_instead_of_looping()
    {
        var data = ServiceHost.NewDataDirectory();
        void MaxTwo(Dictionary<string, string?> s) => s["Omni:Queue:MaxAttempts"] = "2";
        string id;
        for (var crash = 0; crash < 2; crash++)
        {
            var frozen = new TestEngine { Freeze = true };
            await using var host = await ServiceHost.StartAsync(data, MaxTwo, frozen);
            if (crash == 0) (await host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"))).Id();
            await frozen.RunStarted.Task.WaitAsync(TimeSpan.FromSeconds(10));
            await host.StopAsync();
        }
        await using var last = await ServiceHost.StartAsync(data, MaxTwo);
        using var conn = new SqliteConnection($"Data Source={Path.Combine(data, "jobs.db")}");
        conn.Open();
        using var cmd = conn.CreateCommand();
        cmd.CommandText = "SELECT id FROM jobs";
        id = (string)cmd.ExecuteScalar()!;
        var job = await last.Client.WaitForTerminalAsync(id);
        Assert.Equal("failed", job.Status());
        Assert.Equal("/problems/job-interrupted", job.GetProperty("error").GetProperty("type").GetString());
        Assert.Equal(0, last.Engine.Runs);
    }

    [Fact]
    public async Task Orderly_shutdown_returns_the_running_job_to_the_queue()
    {
        var data = ServiceHost.NewDataDirectory();
        string id;
        await using (var first = await ServiceHost.StartAsync(data))
        {
            first.Engine.Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            id = (await first.Client.SubmitAsync(TestImages.Png(), ("steps", "3"))).Id();
            await first.Client.WaitForStatusAsync(id, j => j.Status() == "running");
            await first.StopAsync(); // cancels the run between steps; the job is released, not failed
        }
        Assert.Equal("queued", ReadStatus(data, id));
        await using var second = await ServiceHost.StartAsync(data);
        var done = await second.Client.WaitForTerminalAsync(id);
        Assert.Equal("succeeded", done.Status());
        Assert.Equal(1, done.GetProperty("attempts").GetInt32()); // a released attempt does not count
    }

    private static string ReadStatus(string data, string id)
    {
        using var conn = new SqliteConnection($"Data Source={Path.Combine(data, "jobs.db")};Pooling=False");
        conn.Open();
        using var cmd = conn.CreateCommand();
        cmd.CommandText = "SELECT status FROM jobs WHERE id = $id";
        cmd.Parameters.AddWithValue("$id", id);
        return (string)cmd.ExecuteScalar()!;
    }

    private static async Task<List<string>> ReadEventTypesAsync(ServiceHost host, string id)
    {
        var text = await host.Client.GetStringAsync($"v1/stylizations/{id}/events");
        return text.Split('\n').Where(l => l.StartsWith("event: ", StringComparison.Ordinal)).Select(l => l[7..]).ToList();
    }
}
