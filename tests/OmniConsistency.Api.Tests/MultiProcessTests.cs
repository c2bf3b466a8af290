using System.Collections.Concurrent;
using Npgsql;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// Scale-out end to end with real processes: one API process (--role api) and two worker processes (--role worker)
/// on one PostgreSQL schema and one blob folder, 30 jobs with webhooks, one worker SIGKILLed in the middle of a job.
/// Run twice: with <see cref="TestEngine"/>, and with the real built-in tiny model (the workers' engine wrapped in
/// <see cref="RunLoggingEngine"/> for the run log). Polls are set to 5 s, so prompt progress comes from LISTEN/NOTIFY.
/// </summary>
public sealed class MultiProcessTests
{
    private sealed record Sample(string Id, string Owner, DateTimeOffset LeaseExpires, DateTimeOffset StartedAt, int Attempts);

    private const int Jobs = 30;
    // Heartbeats every lease/3. 3 s was seen to expire a live worker's lease when the whole solution's tests loaded the
    // 2-core machine (a run then completed twice in the engine, once in the store); 6 s keeps the kill recovery quick.
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(6);

    [Theory]
    [InlineData("test")]
    [InlineData("builtin")]
    public async Task Two_workers_one_killed_mid_job_every_job_succeeds_once_and_every_webhook_is_delivered(string engine)
    {
        await using var schema = await PostgresTestSchema.CreateAsync();
        await using var receiver = await WebhookReceiver.StartAsync();
        var data = ServiceHost.NewDataDirectory();
        var runs = Directory.CreateTempSubdirectory("omni-runs-").FullName;
        var builtIn = engine == "builtin";
        string styles, style;
        string[] engineArgs = [], jobFields = [];
        if (builtIn)
        {
            // Created once here, so the workers load it instead of racing to write it; the API lists its styles.
            var engineData = ServiceHost.NewDataDirectory();
            styles = OmniConsistency.Inference.BuiltIn.BuiltInModel.EnsureCreated(engineData).StylesFolder;
            style = OmniConsistency.Inference.BuiltIn.BuiltInModel.DemoStyleName;
            engineArgs = ["--TestEngine:Engine=builtin", $"--Omni:Engine:DataDirectory={engineData}", "--Omni:Engine:Threads=1"];
            jobFields = ["width", "64", "height", "64", "condSize", "64"];
        }
        else
        {
            styles = Directory.CreateTempSubdirectory("omni-styles-").FullName;
            File.WriteAllBytes(Path.Combine(styles, "demo.safetensors"), [0]);
            style = "demo";
        }

        string[] Common(string role, int stepDelayMs = 40) =>
        [
            .. engineArgs,
            "--role", role,
            "--Omni:Storage:Provider=postgres", $"--Omni:Storage:PostgresConnectionString={schema.ConnectionString}",
            $"--Omni:Storage:DataDirectory={data}", $"--Omni:Engine:LoraFolder={styles}",
            $"--Omni:Webhooks:Secret={ServiceHost.WebhookSecret}", "--Omni:Webhooks:AllowedNetworks:0=127.0.0.1/32",
            "--Omni:Webhooks:RetryBaseDelay=00:00:00.300", "--Omni:Webhooks:PollInterval=00:00:05",
            "--Omni:Queue:PollInterval=00:00:05", $"--Omni:Queue:LeaseDuration={Lease}", "--Omni:Queue:Capacity=100",
            $"--TestEngine:StepDelayMs={stepDelayMs}", $"--TestEngine:RunLogDirectory={runs}", "--Serilog:MinimumLevel:Default=Warning",
        ];
        // The API first: it creates the schema the workers' recovery loops read.
        await using var api = await TestServerProcess.StartAsync("api", Common("api"));
        // The victim is slow (1.5 s a step), so the job it holds is still mid-way whenever the kill lands, however
        // loaded the machine is; the survivor runs the rest at 40 ms a step (the built-in model: at its own speed).
        var workers = await Task.WhenAll(
            TestServerProcess.StartAsync("worker-1", Common("worker", stepDelayMs: 1500), TimeSpan.FromSeconds(120)),
            TestServerProcess.StartAsync("worker-2", Common("worker", stepDelayMs: builtIn ? 0 : 40), TimeSpan.FromSeconds(120)));
        await using var victim = workers[0];
        await using var survivor = workers[1];

        // Watch the running jobs' leases the whole time.
        var samples = new ConcurrentQueue<Sample>();
        using var stopSampling = new CancellationTokenSource();
        var sampler = Task.Run(() => SampleLeasesAsync(schema.ConnectionString, samples, stopSampling.Token));

        var ids = new List<string>();
        for (var seed = 1; seed <= Jobs; seed++)
        {
            var fields = new List<(string, string)> { ("steps", "6"), ("seed", seed.ToString()), ("style", style), ("webhookUrl", receiver.Url) };
            for (var i = 0; i < jobFields.Length; i += 2) fields.Add((jobFields[i], jobFields[i + 1]));
            ids.Add((await api.Client.SubmitAsync(TestImages.Png(), [.. fields])).Id());
        }

        // Kill worker 1 while it is in the middle of a job (a step reported, more to come).
        var killedJob = await WaitForAsync(() => schema.ScalarOrNullAsync<string>(
            $"SELECT id FROM jobs WHERE status = 'running' AND lease_owner LIKE '%/{victim.Pid}/%' AND progress_step >= 1 LIMIT 1"), TimeSpan.FromSeconds(60));
        victim.Kill();

        var finished = new List<System.Text.Json.JsonElement>();
        foreach (var id in ids) finished.Add(await api.Client.WaitForTerminalAsync(id, TimeSpan.FromSeconds(90)));
        await stopSampling.CancelAsync();
        await sampler;

        Assert.All(finished, j => Assert.True(j.Status() == "succeeded", $"{j.Id()}: {j}"));
        Assert.Equal(2, finished.Single(j => j.Id() == killedJob).GetProperty("attempts").GetInt32());

        // Exactly once: every job's engine run completed once over both workers; the killed attempt never completed.
        var log = Directory.GetFiles(runs).SelectMany(File.ReadAllLines).Select(l => l.Split(' ')).ToList();
        for (var seed = 1; seed <= Jobs; seed++)
            Assert.True(log.Count(l => l[0] == "done" && l[1] == seed.ToString()) == 1,
                $"seed {seed}: {string.Join("; ", log.Where(l => l[1] == seed.ToString()).Select(l => string.Join(' ', l)))} (victim {victim.Pid}, survivor {survivor.Pid}); " +
                $"job: {finished.Single(j => j.GetProperty("seed").GetInt64() == seed)}");
        var killedSeed = finished.Single(j => j.Id() == killedJob).GetProperty("seed").GetInt64().ToString();
        var victimPid = victim.Pid.ToString();
        Assert.Contains(log, l => l[0] == "start" && l[1] == killedSeed && l[2] == victimPid);
        Assert.DoesNotContain(log, l => l[0] == "done" && l[1] == killedSeed && l[2] == victimPid);
        Assert.Equal(Jobs + 1, log.Count(l => l[0] == "start"));

        // The event log: one completion per job; every extra start was preceded by a re-queue.
        foreach (var id in ids)
        {
            var events = (await api.Client.GetStringAsync($"v1/stylizations/{id}/events"))
                .Split('\n').Where(l => l.StartsWith("event: ", StringComparison.Ordinal)).Select(l => l[7..]).Where(e => e != "progress").ToList();
            Assert.Equal(1, events.Count(e => e == "completed"));
            Assert.Equal(events.Count(e => e == "requeued") + 1, events.Count(e => e == "started"));
        }

        // No job was claimed while another worker's lease on it was live: a later attempt started only after the
        // latest lease expiry observed for the earlier attempts, and one attempt never had two owners.
        var byJob = samples.GroupBy(s => s.Id).ToDictionary(g => g.Key, g => g.ToList());
        Assert.True(byJob.ContainsKey(killedJob));
        foreach (var (id, list) in byJob)
        {
            Assert.All(list.GroupBy(s => s.Attempts), g => Assert.Single(g.Select(s => s.Owner).Distinct()));
            var job = finished.Single(j => j.Id() == id);
            var lastStart = job.GetProperty("startedAt").GetDateTimeOffset();
            var attempts = job.GetProperty("attempts").GetInt32();
            var earlier = list.Where(s => s.Attempts < attempts).ToList();
            if (earlier.Count > 0)
                Assert.True(lastStart >= earlier.Max(s => s.LeaseExpires), $"{id}: attempt {attempts} started {lastStart:O} before the lease {earlier.Max(s => s.LeaseExpires):O} ran out");
        }
        Assert.Contains(byJob[killedJob], s => s.Owner.Contains($"/{victim.Pid}/", StringComparison.Ordinal));

        // Every webhook of the outbox was delivered, signed, each message at least once (dedupe on webhook-id).
        await WaitForAsync(async () => await schema.ScalarAsync<long>("SELECT COUNT(*) FROM webhook_deliveries WHERE status <> 'delivered'") == 0 ? "" : null,
            TimeSpan.FromSeconds(30));
        var outbox = await schema.ScalarAsync<long>("SELECT COUNT(*) FROM webhook_deliveries");
        Assert.Equal(Jobs * 2 + 1, outbox); // started + succeeded per job, and a second start for the killed job
        await receiver.WaitForAsync(r => r.Delivered.Select(d => d.Id).Distinct().Count() == outbox);
        Assert.All(receiver.Requests, r => Assert.True(r.SignatureValid));
        var succeeded = receiver.Delivered.Where(d => d.Type == "stylization.succeeded").GroupBy(d => d.Payload.GetProperty("data").GetProperty("id").GetString()!).ToList();
        Assert.Equal(ids.Order(), succeeded.Select(g => g.Key).Order());
        Assert.All(succeeded, g => Assert.Single(g.Select(d => d.Id).Distinct()));
    }

    private static async Task SampleLeasesAsync(string connectionString, ConcurrentQueue<Sample> samples, CancellationToken ct)
    {
        await using var conn = new NpgsqlConnection(connectionString);
        await conn.OpenAsync(CancellationToken.None);
        while (!ct.IsCancellationRequested)
        {
            await using (var cmd = new NpgsqlCommand("SELECT id, lease_owner, lease_expires_at, started_at, attempts FROM jobs WHERE status = 'running' AND lease_owner IS NOT NULL", conn))
            await using (var r = await cmd.ExecuteReaderAsync(CancellationToken.None))
                while (await r.ReadAsync(CancellationToken.None))
                    samples.Enqueue(new Sample(r.GetString(0), r.GetString(1), r.GetFieldValue<DateTimeOffset>(2), r.GetFieldValue<DateTimeOffset>(3), r.GetInt32(4)));
            try { await Task.Delay(10, ct); } catch (OperationCanceledException) { }
        }
    }

    private static async Task<string> WaitForAsync(Func<Task<string?>> probe, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (await probe() is { } found) return found;
            if (DateTime.UtcNow > deadline) throw new TimeoutException("condition not met in " + timeout);
            await Task.Delay(10);
        }
    }
}
