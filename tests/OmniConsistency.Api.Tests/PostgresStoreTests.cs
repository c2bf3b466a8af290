using OmniConsistency.Inference.Pipelines;
using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using OmniConsistency.Api.Jobs;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Storage;

namespace OmniConsistency.Api.Tests;

/// <summary>What only the PostgreSQL store has: migrations, cross-process notifications, the autoscaler's query.</summary>
public sealed class PostgresStoreTests
{
    private static readonly CancellationToken Ct = CancellationToken.None;

    private static PostgresJobStore NewStore(Npgsql.NpgsqlDataSource ds) =>
        new(ds, Microsoft.Extensions.Options.Options.Create(new StorageOptions()), new JobTransitionEffectsFactory());

    private static NewJob Job(string id) => new()
    {
        Id = id, Owner = "k", Parameters = new StylizationSettings { Steps = 2, Seed = 1 }, InputBlob = $"inputs/{id}", BaseUrl = "http://svc",
        CreatedAt = DateTimeOffset.UtcNow,
    };

    [Fact]
    public async Task Schema_is_created_once_by_concurrent_starts_and_recorded_in_schema_version()
    {
        await using var schema = await PostgresTestSchema.CreateAsync();
        await using var ds = schema.NewDataSource();
        // Replicas starting together: the advisory lock lets one migrate, the others find it done.
        await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(() => NewStore(ds).InitializeAsync(Ct))));
        await NewStore(ds).InitializeAsync(Ct);
        Assert.Equal(PostgresSchema.LatestVersion, await schema.ScalarAsync<int>("SELECT MAX(version) FROM schema_version"));
        Assert.Equal((long)PostgresSchema.Migrations.Count, await schema.ScalarAsync<long>("SELECT COUNT(*) FROM schema_version"));
        Assert.Equal(3L, await schema.ScalarAsync<long>(
            $"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{schema.Schema}' AND table_name IN ('jobs', 'job_events', 'webhook_deliveries')"));
    }

    [Fact]
    public async Task A_database_at_version_1_gets_the_owner_list_index_at_the_next_start()
    {
        await using var schema = await PostgresTestSchema.CreateAsync();
        await using var ds = schema.NewDataSource();
        await NewStore(ds).InitializeAsync(Ct);
        // What a release before migration 2 left behind, with a job in it.
        await schema.ExecAsync("DROP INDEX ix_jobs_owner_created; DELETE FROM schema_version WHERE version >= 2");
        await NewStore(ds).EnqueueAsync(Job("old"), 10, Ct);
        Assert.Equal(1, await PostgresSchema.MigrateAsync(ds, Ct));
        Assert.Equal(PostgresSchema.LatestVersion, await schema.ScalarAsync<int>("SELECT MAX(version) FROM schema_version"));
        Assert.Equal("ix_jobs_owner_created", await schema.ScalarOrNullAsync<string>(
            $"SELECT indexname FROM pg_indexes WHERE schemaname = '{schema.Schema}' AND indexname = 'ix_jobs_owner_created'"));
        var listed = await NewStore(ds).ListAsync(new JobListQuery("k", [], null, 10), Ct);
        Assert.Equal("old", Assert.Single(listed).Id);
    }

    [Fact]
    public async Task A_database_newer_than_this_build_is_refused_with_its_version()
    {
        await using var schema = await PostgresTestSchema.CreateAsync();
        await using var ds = schema.NewDataSource();
        await NewStore(ds).InitializeAsync(Ct);
        var future = PostgresSchema.LatestVersion + 1;
        await schema.ExecAsync($"INSERT INTO schema_version (version, description) VALUES ({future}, 'from a newer release')");
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => NewStore(ds).InitializeAsync(Ct));
        Assert.Contains($"schema version {future}", e.Message);
    }

    [Fact]
    public async Task A_missing_schema_is_reported_by_name()
    {
        var cs = new Npgsql.NpgsqlConnectionStringBuilder(TestPostgres.Require()) { SearchPath = "omni_no_such_schema" }.ConnectionString;
        await using var ds = Npgsql.NpgsqlDataSource.Create(cs);
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => NewStore(ds).InitializeAsync(Ct));
        Assert.Contains("search_path", e.Message);
    }

    [Fact]
    public async Task Notifications_from_another_process_wake_workers_waiters_and_cancel_running_jobs()
    {
        await using var schema = await PostgresTestSchema.CreateAsync();
        await using var listenerSource = schema.NewDataSource();
        await using var otherSource = schema.NewDataSource(); // plays another process
        var other = NewStore(otherSource);
        await other.InitializeAsync(Ct);

        var signals = new JobSignals();
        var running = new RunningJobs();
        var listener = new PostgresNotificationListener(listenerSource, signals, running, NullLogger<PostgresNotificationListener>.Instance);
        await listener.StartAsync(Ct);
        try
        {
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (!listener.Listening && DateTime.UtcNow < deadline) await Task.Delay(20);
            Assert.True(listener.Listening);
            await signals.WaitForWorkAsync(TimeSpan.FromMilliseconds(200), Ct); // the wake-up every (re)connect sends

            // Waits are 30 s; each must end well before because the notification arrived.
            var wait = Stopwatch.StartNew();
            var work = signals.WaitForWorkAsync(TimeSpan.FromSeconds(30), Ct);
            await other.EnqueueAsync(Job("n1"), 10, Ct);
            await work;
            Assert.True(wait.Elapsed < TimeSpan.FromSeconds(10), $"work signal took {wait.Elapsed}");

            wait.Restart();
            var changed = signals.WaitForJobChangeAsync("n1", TimeSpan.FromSeconds(30), Ct);
            var claimed = await other.ClaimNextAsync("w", TimeSpan.FromMinutes(1), DateTimeOffset.UtcNow, Ct);
            await changed;
            Assert.True(wait.Elapsed < TimeSpan.FromSeconds(10), $"job change took {wait.Elapsed}");

            // A cancel sent through another API replica stops the job where it runs (here), not at the next heartbeat.
            using var jobCts = new CancellationTokenSource();
            var entry = running.Register(claimed!.Id, jobCts);
            wait.Restart();
            Assert.Equal(CancelOutcome.CancelRequested, (await other.RequestCancelAsync("n1", DateTimeOffset.UtcNow, Ct)).Outcome);
            await Task.Delay(Timeout.Infinite, jobCts.Token).ContinueWith(_ => { }, TaskScheduler.Default).WaitAsync(TimeSpan.FromSeconds(10));
            Assert.True(entry.CancelRequested);
            Assert.True(wait.Elapsed < TimeSpan.FromSeconds(10));
        }
        finally
        {
            await listener.StopAsync(Ct);
            listener.Dispose();
        }
    }

    [Fact]
    public async Task The_autoscaler_query_in_the_manifests_counts_queued_and_running_jobs()
    {
        await using var schema = await PostgresTestSchema.CreateAsync();
        await using var ds = schema.NewDataSource();
        var store = NewStore(ds);
        await store.InitializeAsync(Ct);
        for (var i = 0; i < 5; i++) await store.EnqueueAsync(Job($"k{i}"), 10, Ct);
        var now = DateTimeOffset.UtcNow;
        var a = await store.ClaimNextAsync("w", TimeSpan.FromMinutes(1), now, Ct);
        await store.ClaimNextAsync("w", TimeSpan.FromMinutes(1), now, Ct);
        await store.CompleteAsync(a!.Id, "w", new JobCompletion(JobStatus.Succeeded, null, null, 1), now, Ct);
        await store.RequestCancelAsync("k4", now, Ct);

        var query = DeploymentFiles.KedaQuery();
        // 2 queued + 1 running: a running job keeps its worker (scaling it away would interrupt the job).
        Assert.Equal(3L, Convert.ToInt64(await schema.ScalarAsync<object>(query)));
    }
}
