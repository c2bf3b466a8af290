using OmniConsistency.Inference.Pipelines;
using System.Diagnostics;
using Microsoft.Extensions.Options;
using Npgsql;
using OmniConsistency.Api.Jobs;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Storage;

namespace OmniConsistency.Benchmarks;

/// <summary>
/// Throughput of the job queue itself: N empty jobs are enqueued, then W concurrent workers claim and complete them
/// (each a full transaction with its event and lease, as the worker does) until the queue is empty. SQLite (a
/// temporary file) and PostgreSQL (a temporary schema of OMNI_BENCH_POSTGRES, else OMNI_TEST_POSTGRES) side by side.
/// Options: --jobs N (2000), --workers W (4), --rounds R (3; the median round is reported).
/// </summary>
public sealed class QueueBenchmark : IBenchmark
{
    public string Name => "queue-throughput";
    public string Description => "job queue: enqueue, then claim + complete of empty jobs by concurrent workers (SQLite vs PostgreSQL)";

    private sealed record Round(double EnqueuePerSecond, double JobsPerSecond, double ClaimP50, double ClaimP99, double CompleteP50, double CompleteP99);

    public void Run(string[] args)
    {
        int jobs = IntArg(args, "--jobs", 2000), workers = IntArg(args, "--workers", 4), rounds = IntArg(args, "--rounds", 3);
        Console.WriteLine($"{jobs} jobs, {workers} workers, median of {rounds} rounds; {Environment.ProcessorCount} cores");
        Console.WriteLine();
        Console.WriteLine("| store | enqueue (jobs/s, 1 client) | claim + complete (jobs/s) | claim p50 / p99 (ms) | complete p50 / p99 (ms) |");
        Console.WriteLine("| --- | --- | --- | --- | --- |");
        Report("SQLite (WAL, file)", RunRounds(rounds, () => SqliteStore(), jobs, workers));
        var cs = Environment.GetEnvironmentVariable("OMNI_BENCH_POSTGRES") ?? Environment.GetEnvironmentVariable("OMNI_TEST_POSTGRES");
        if (string.IsNullOrEmpty(cs))
        {
            Console.WriteLine("| PostgreSQL | (skipped: set OMNI_BENCH_POSTGRES or OMNI_TEST_POSTGRES; .ci/setup starts a local server) | | | |");
            return;
        }
        var server = ServerVersion(cs);
        Report($"PostgreSQL {server} (TCP loopback)", RunRounds(rounds, () => PostgresStore(cs), jobs, workers));
        // What waiting for the WAL flush at each commit costs (a job's state change is then lost if the server crashes).
        var asyncCommit = new NpgsqlConnectionStringBuilder(cs) { Options = "-c synchronous_commit=off" }.ConnectionString;
        Report($"PostgreSQL {server}, synchronous_commit=off", RunRounds(rounds, () => PostgresStore(asyncCommit), jobs, workers));
        Console.WriteLine();
        Console.WriteLine($"One PostgreSQL round trip from this process (SELECT 1, p50): {RoundTripMs(cs):F3} ms");
    }

    private static void Report(string store, Round r) => Console.WriteLine(
        $"| {store} | {r.EnqueuePerSecond:F0} | **{r.JobsPerSecond:F0}** | {r.ClaimP50:F2} / {r.ClaimP99:F2} | {r.CompleteP50:F2} / {r.CompleteP99:F2} |");

    private static Round RunRounds(int rounds, Func<(IJobStore Store, Action Cleanup)> create, int jobs, int workers)
    {
        var results = new List<Round>();
        for (var i = 0; i <= rounds; i++)
        {
            var (store, cleanup) = create();
            try
            {
                var r = RunOnce(store, i == 0 ? Math.Min(200, jobs) : jobs, workers);
                if (i > 0) results.Add(r); // round 0 warms up (JIT, pools)
            }
            finally { cleanup(); }
        }
        return results.OrderBy(r => r.JobsPerSecond).ElementAt(results.Count / 2);
    }

    private static Round RunOnce(IJobStore store, int jobs, int workers)
    {
        var ct = CancellationToken.None;
        store.InitializeAsync(ct).GetAwaiter().GetResult();
        var parameters = new StylizationSettings { Steps = 1, Seed = 1 };
        var enqueue = Stopwatch.StartNew();
        for (var i = 0; i < jobs; i++)
        {
            var id = Guid.CreateVersion7().ToString("N");
            store.EnqueueAsync(new NewJob { Id = id, Owner = "bench", Parameters = parameters, InputBlob = "inputs/" + id, BaseUrl = "http://bench", CreatedAt = DateTimeOffset.UtcNow },
                jobs, ct).GetAwaiter().GetResult();
        }
        var enqueueRate = jobs / enqueue.Elapsed.TotalSeconds;

        var claims = new List<double>[workers];
        var completes = new List<double>[workers];
        var clock = Stopwatch.StartNew();
        Task.WhenAll(Enumerable.Range(0, workers).Select(w => Task.Run(async () =>
        {
            claims[w] = [];
            completes[w] = [];
            var worker = $"bench-{w}";
            while (true)
            {
                var t0 = Stopwatch.GetTimestamp();
                var job = await store.ClaimNextAsync(worker, TimeSpan.FromMinutes(5), DateTimeOffset.UtcNow, ct);
                claims[w].Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
                if (job is null) return;
                t0 = Stopwatch.GetTimestamp();
                var done = await store.CompleteAsync(job.Id, worker, new JobCompletion(JobStatus.Succeeded, null, null, 0), DateTimeOffset.UtcNow, ct);
                completes[w].Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
                if (done is null) throw new InvalidOperationException($"lost the lease of {job.Id}");
            }
        }))).GetAwaiter().GetResult();
        var rate = jobs / clock.Elapsed.TotalSeconds;
        var counts = store.GetCountsAsync(ct).GetAwaiter().GetResult();
        if (counts.Succeeded != jobs) throw new InvalidOperationException($"{counts.Succeeded} of {jobs} jobs completed");
        var c = claims.SelectMany(x => x).Order().ToArray();
        var d = completes.SelectMany(x => x).Order().ToArray();
        return new Round(enqueueRate, rate, Pct(c, 0.5), Pct(c, 0.99), Pct(d, 0.5), Pct(d, 0.99));
    }

    private static double Pct(double[] sorted, double p) => sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];

    private static (IJobStore, Action) SqliteStore()
    {
        var dir = Directory.CreateTempSubdirectory("queue-bench-").FullName;
        var store = new SqliteJobStore(Options.Create(new StorageOptions { DataDirectory = dir }), new JobTransitionEffectsFactory());
        return (store, () => { store.Dispose(); Directory.Delete(dir, recursive: true); });
    }

    private static (IJobStore, Action) PostgresStore(string adminConnectionString)
    {
        var schema = "omni_bench_" + Guid.NewGuid().ToString("N")[..12];
        Exec(adminConnectionString, $"CREATE SCHEMA {schema}");
        var ds = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(adminConnectionString) { SearchPath = schema }.ConnectionString);
        var store = new PostgresJobStore(ds, Options.Create(new StorageOptions()), new JobTransitionEffectsFactory());
        return (store, () => { ds.Dispose(); Exec(adminConnectionString, $"DROP SCHEMA {schema} CASCADE"); });
    }

    private static double RoundTripMs(string cs)
    {
        using var ds = NpgsqlDataSource.Create(cs);
        using var conn = ds.OpenConnection();
        using var cmd = new NpgsqlCommand("SELECT 1", conn);
        var times = new double[2000];
        for (var i = 0; i < times.Length; i++)
        {
            var t0 = Stopwatch.GetTimestamp();
            cmd.ExecuteScalarAsync().GetAwaiter().GetResult();
            times[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }
        Array.Sort(times);
        return times[times.Length / 2];
    }

    private static string ServerVersion(string cs)
    {
        using var conn = new NpgsqlConnection(cs);
        conn.Open();
        return conn.PostgreSqlVersion.ToString();
    }

    private static void Exec(string cs, string sql)
    {
        using var conn = new NpgsqlConnection(cs);
        conn.Open();
        using var cmd = new NpgsqlCommand(sql, conn);
        cmd.ExecuteNonQuery();
    }

    private static int IntArg(string[] args, string name, int fallback)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length && int.TryParse(args[i + 1], out var v) ? v : fallback;
    }
}
