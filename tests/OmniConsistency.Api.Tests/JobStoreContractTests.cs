using OmniConsistency.Inference.Pipelines;
using Microsoft.Extensions.Options;
using OmniConsistency.Api.Jobs;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Storage;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// The <see cref="IJobStore"/> contract. Another store (PostgreSQL) passes the same tests by deriving from this
/// class and creating its store in <see cref="CreateStoreAsync"/>.
/// </summary>
public abstract class JobStoreContractTests : IAsyncLifetime
{
    protected IJobStore Store { get; private set; } = null!;
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(30);
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 12, 0, 0, TimeSpan.Zero);

    protected abstract Task<IJobStore> CreateStoreAsync();

    public async ValueTask InitializeAsync()
    {
        Store = await CreateStoreAsync();
        await Store.InitializeAsync(CancellationToken.None);
    }

    public virtual ValueTask DisposeAsync()
    {
        (Store as IDisposable)?.Dispose();
        return ValueTask.CompletedTask;
    }

    private static NewJob Job(string id, string owner = "k", string? key = null, string? hash = null, string? webhook = null, DateTimeOffset? at = null) => new()
    {
        Id = id, Owner = owner, Parameters = new StylizationSettings { Steps = 2, Seed = 1 }, InputBlob = $"inputs/{id}",
        IdempotencyKey = key, RequestHash = hash, WebhookUrl = webhook,
        WebhookEvents = webhook is null ? [] : ["started", "succeeded", "failed", "canceled"], BaseUrl = "http://svc", CreatedAt = at ?? T0,
    };

    private static readonly CancellationToken Ct = CancellationToken.None;

    [Fact]
    public async Task Jobs_are_claimed_oldest_first_with_queue_positions()
    {
        for (var i = 1; i <= 3; i++) Assert.Equal(EnqueueOutcome.Created, (await Store.EnqueueAsync(Job($"j{i}"), 10, Ct)).Outcome);
        Assert.Equal(3, (await Store.GetAsync("j3", Ct))!.QueuePosition);
        var claimed = await Store.ClaimNextAsync("w1", Lease, T0, Ct);
        Assert.Equal("j1", claimed!.Id);
        Assert.Equal(JobStatus.Running, claimed.Status);
        Assert.Equal(1, claimed.Attempts);
        Assert.Equal(1, (await Store.GetAsync("j2", Ct))!.QueuePosition);
        Assert.Equal("j2", (await Store.ClaimNextAsync("w1", Lease, T0, Ct))!.Id);
    }

    [Fact]
    public async Task Concurrent_claims_never_hand_out_a_job_twice()
    {
        for (var i = 0; i < 20; i++) await Store.EnqueueAsync(Job($"c{i:00}"), 100, Ct);
        var claims = await Task.WhenAll(Enumerable.Range(0, 40).Select(w => Task.Run(() => Store.ClaimNextAsync($"w{w}", Lease, T0, Ct))));
        var ids = claims.Where(c => c is not null).Select(c => c!.Id).ToList();
        Assert.Equal(20, ids.Count);
        Assert.Equal(20, ids.Distinct().Count());
    }

    [Fact]
    public async Task Expired_lease_requeues_and_the_old_worker_can_no_longer_write()
    {
        await Store.EnqueueAsync(Job("a"), 10, Ct);
        await Store.ClaimNextAsync("old", Lease, T0, Ct);
        Assert.Equal(0, await Store.RecoverAsync(T0 + Lease / 2, 3, includeLiveLeases: false, Ct)); // live lease untouched
        Assert.Equal(1, await Store.RecoverAsync(T0 + Lease + TimeSpan.FromSeconds(1), 3, includeLiveLeases: false, Ct));
        Assert.Equal(JobStatus.Queued, (await Store.GetAsync("a", Ct))!.Status);

        var again = await Store.ClaimNextAsync("new", Lease, T0 + Lease * 2, Ct);
        Assert.Equal(2, again!.Attempts);
        Assert.False((await Store.RenewLeaseAsync("a", "old", Lease, T0 + Lease * 2, Ct)).Held);
        Assert.False(await Store.ReportProgressAsync("a", "old", new JobProgress("denoise", 1, 2), T0, Ct));
        Assert.Null(await Store.CompleteAsync("a", "old", new JobCompletion(JobStatus.Succeeded, null, null, 1), T0, Ct));
        Assert.NotNull(await Store.CompleteAsync("a", "new", new JobCompletion(JobStatus.Failed, null, new JobError("x", "X", "x"), 1), T0, Ct));
        Assert.Equal(JobStatus.Failed, (await Store.GetAsync("a", Ct))!.Status);
    }

    [Fact]
    public async Task A_job_out_of_attempts_fails_instead_of_requeueing()
    {
        await Store.EnqueueAsync(Job("b", webhook: "http://hook"), 10, Ct);
        await Store.ClaimNextAsync("w", Lease, T0, Ct);
        await Store.RecoverAsync(T0, 2, includeLiveLeases: true, Ct);
        await Store.ClaimNextAsync("w", Lease, T0, Ct);
        await Store.RecoverAsync(T0, 2, includeLiveLeases: true, Ct);
        var job = await Store.GetAsync("b", Ct);
        Assert.Equal(JobStatus.Failed, job!.Status);
        Assert.Equal("job-interrupted", job.Error!.Type);
        var deliveries = await Store.GetDeliveriesAsync("b", Ct);
        Assert.Equal(["stylization.failed", "stylization.started", "stylization.started"], deliveries.Select(d => d.EventType).Order());
    }

    [Fact]
    public async Task Capacity_and_idempotency_are_checked_with_the_insert()
    {
        Assert.Equal(EnqueueOutcome.Created, (await Store.EnqueueAsync(Job("i1", key: "K", hash: "H"), 2, Ct)).Outcome);
        var replay = await Store.EnqueueAsync(Job("i2", key: "K", hash: "H"), 2, Ct);
        Assert.Equal(EnqueueOutcome.Replayed, replay.Outcome);
        Assert.Equal("i1", replay.Job!.Id);
        Assert.Equal(EnqueueOutcome.IdempotencyConflict, (await Store.EnqueueAsync(Job("i3", key: "K", hash: "other"), 2, Ct)).Outcome);
        Assert.Equal(EnqueueOutcome.Created, (await Store.EnqueueAsync(Job("i4", owner: "someone-else", key: "K", hash: "H"), 2, Ct)).Outcome);
        Assert.Equal(EnqueueOutcome.QueueFull, (await Store.EnqueueAsync(Job("i5"), 2, Ct)).Outcome);
        Assert.Null(await Store.GetAsync("i5", Ct));
    }

    [Fact]
    public async Task Concurrent_enqueues_never_exceed_capacity_nor_reuse_a_key()
    {
        var results = await Task.WhenAll(Enumerable.Range(0, 24).Select(i => Task.Run(() => Store.EnqueueAsync(Job($"cap{i:00}"), 5, Ct))));
        Assert.Equal(5, results.Count(r => r.Outcome == EnqueueOutcome.Created));
        Assert.Equal(19, results.Count(r => r.Outcome == EnqueueOutcome.QueueFull));
        Assert.Equal(5, (await Store.GetCountsAsync(Ct)).Queued);

        var keyed = await Task.WhenAll(Enumerable.Range(0, 12).Select(i => Task.Run(() => Store.EnqueueAsync(Job($"key{i:00}", key: "same", hash: "H"), 100, Ct))));
        var created = Assert.Single(keyed, r => r.Outcome == EnqueueOutcome.Created);
        Assert.All(keyed.Where(r => r.Outcome != EnqueueOutcome.Created), r =>
        {
            Assert.Equal(EnqueueOutcome.Replayed, r.Outcome);
            Assert.Equal(created.Job!.Id, r.Job!.Id);
        });
    }

    [Fact]
    public async Task Concurrent_claim_complete_and_recovery_run_every_job_once()
    {
        // Four workers drain the queue while a recoverer runs with live leases only: nothing is taken twice.
        for (var i = 0; i < 30; i++) await Store.EnqueueAsync(Job($"d{i:00}"), 100, Ct);
        var completed = new System.Collections.Concurrent.ConcurrentBag<string>();
        using var stop = new CancellationTokenSource();
        var recoverer = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested) await Store.RecoverAsync(T0 + TimeSpan.FromSeconds(1), 3, includeLiveLeases: false, Ct);
        });
        await Task.WhenAll(Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
        {
            while (await Store.ClaimNextAsync($"w{w}", Lease, T0, Ct) is { } job)
            {
                Assert.True((await Store.RenewLeaseAsync(job.Id, $"w{w}", Lease, T0, Ct)).Held);
                Assert.NotNull(await Store.CompleteAsync(job.Id, $"w{w}", new JobCompletion(JobStatus.Succeeded, null, null, 1), T0, Ct));
                completed.Add(job.Id);
            }
        })));
        await stop.CancelAsync();
        await recoverer;
        Assert.Equal(30, completed.Count);
        Assert.Equal(30, completed.Distinct().Count());
        Assert.Equal(30, (await Store.GetCountsAsync(Ct)).Succeeded);
    }

    [Fact]
    public async Task Cancel_is_immediate_when_queued_and_requested_when_running()
    {
        await Store.EnqueueAsync(Job("r"), 10, Ct);
        await Store.EnqueueAsync(Job("q"), 10, Ct);
        await Store.ClaimNextAsync("w", Lease, T0, Ct);
        Assert.Equal(CancelOutcome.Canceled, (await Store.RequestCancelAsync("q", T0, Ct)).Outcome);
        Assert.Equal(CancelOutcome.CancelRequested, (await Store.RequestCancelAsync("r", T0, Ct)).Outcome);
        Assert.True((await Store.RenewLeaseAsync("r", "w", Lease, T0, Ct)).CancelRequested);
        Assert.Null(await Store.ClaimNextAsync("w", Lease, T0, Ct)); // the canceled job is not claimable
        await Store.CompleteAsync("r", "w", new JobCompletion(JobStatus.Canceled, null, null, 1), T0, Ct);
        Assert.Equal(CancelOutcome.AlreadyFinished, (await Store.RequestCancelAsync("r", T0, Ct)).Outcome);
        Assert.Equal(CancelOutcome.NotFound, (await Store.RequestCancelAsync("nope", T0, Ct)).Outcome);
    }

    [Fact]
    public async Task Events_record_every_transition_in_order()
    {
        await Store.EnqueueAsync(Job("e"), 10, Ct);
        await Store.ClaimNextAsync("w", Lease, T0, Ct);
        await Store.ReportProgressAsync("e", "w", new JobProgress("denoise", 1, 2), T0, Ct);
        await Store.ReportProgressAsync("e", "w", new JobProgress("denoise", 2, 2), T0, Ct);
        await Store.CompleteAsync("e", "w", new JobCompletion(JobStatus.Succeeded,
            new JobResultInfo("results/e.png", "image/png", 16, 16, 10, "\"x\"", "p", []), null, 5), T0, Ct);
        var events = await Store.GetEventsAsync("e", 0, 100, Ct);
        Assert.Equal(["queued", "started", "progress", "progress", "completed"], events.Select(e => e.Type));
        Assert.Equal(events.Skip(2).Select(e => e.Seq), (await Store.GetEventsAsync("e", events[1].Seq, 100, Ct)).Select(e => e.Seq));
        var counts = await Store.GetCountsAsync(Ct);
        Assert.Equal(1, counts.Succeeded);
    }

    [Fact]
    public async Task Webhook_outbox_leases_due_deliveries_and_keeps_the_schedule()
    {
        await Store.EnqueueAsync(Job("h", webhook: "http://hook"), 10, Ct);
        await Store.ClaimNextAsync("w", Lease, T0, Ct);
        var due = await Store.ClaimDueDeliveriesAsync("d1", T0, 10, Lease, Ct);
        Assert.Equal("stylization.started", Assert.Single(due).EventType);
        Assert.Empty(await Store.ClaimDueDeliveriesAsync("d2", T0, 10, Lease, Ct)); // leased to d1

        var next = T0 + TimeSpan.FromMinutes(5);
        await Store.RecordDeliveryRoundAsync(due[0].Id, new DeliveryRound(DeliveryStatus.Pending, 2, next, 503, "503", T0), Ct);
        Assert.Empty(await Store.ClaimDueDeliveriesAsync("d2", T0 + TimeSpan.FromMinutes(1), 10, Lease, Ct));
        var retry = Assert.Single(await Store.ClaimDueDeliveriesAsync("d2", next, 10, Lease, Ct));
        Assert.Equal(2, retry.Attempts);
        await Store.RecordDeliveryRoundAsync(retry.Id, new DeliveryRound(DeliveryStatus.Delivered, 1, null, 200, null, next), Ct);
        var stored = Assert.Single(await Store.GetDeliveriesAsync("h", Ct));
        Assert.Equal(DeliveryStatus.Delivered, stored.Status);
        Assert.Equal(3, stored.Attempts);
        Assert.Equal(next, stored.DeliveredAt);
    }

    [Fact]
    public async Task Results_expire_after_retention_and_old_jobs_are_deleted()
    {
        await Store.EnqueueAsync(Job("x"), 10, Ct);
        await Store.ClaimNextAsync("w", Lease, T0, Ct);
        await Store.CompleteAsync("x", "w", new JobCompletion(JobStatus.Succeeded,
            new JobResultInfo("results/x.png", "image/png", 16, 16, 10, "\"x\"", "p", []), null, 5), T0, Ct);
        Assert.Empty(await Store.ListExpiredResultsAsync(T0 + TimeSpan.FromHours(23), 10, Ct));
        var expired = Assert.Single(await Store.ListExpiredResultsAsync(T0 + TimeSpan.FromHours(25), 10, Ct));
        Assert.Equal(["inputs/x", "results/x.png"], expired.Blobs);
        await Store.MarkResultExpiredAsync("x", Ct);
        Assert.True((await Store.GetAsync("x", Ct))!.ResultExpired);
        Assert.Empty(await Store.ListExpiredResultsAsync(T0 + TimeSpan.FromHours(25), 10, Ct));

        Assert.Single(await Store.DeleteFinishedJobsAsync(T0 + TimeSpan.FromDays(8), 10, Ct));
        Assert.Null(await Store.GetAsync("x", Ct));
        Assert.Empty(await Store.GetEventsAsync("x", 0, 10, Ct));
    }

    private static JobResultInfo ResultFor(string id) => new($"results/{id}.png", "image/png", 16, 16, 10, "\"x\"", "p", []);

    private async Task<List<string>> PageAsync(string owner, JobListCursor? after, int limit, params JobStatus[] statuses) =>
        (await Store.ListAsync(new JobListQuery(owner, statuses, after, limit), Ct)).Select(j => j.Id).ToList();

    private static JobListCursor CursorOf(JobRecord job) => new(job.CreatedAt, job.Id);

    [Fact]
    public async Task Owner_list_is_newest_first_and_keyset_pages_stay_stable_while_jobs_arrive()
    {
        // Created one second apart, two at the same instant (ordered by id), another owner's jobs in between.
        foreach (var (id, s) in new[] { ("L0", 0), ("L1", 1), ("L2", 2), ("L3a", 3), ("L3b", 3), ("L4", 4), ("L5", 5) })
        {
            await Store.EnqueueAsync(Job(id, at: T0 + TimeSpan.FromSeconds(s)), 100, Ct);
            await Store.EnqueueAsync(Job("o" + id, owner: "other", at: T0 + TimeSpan.FromSeconds(s)), 100, Ct);
        }

        var first = await Store.ListAsync(new JobListQuery("k", [], null, 3), Ct);
        Assert.Equal(["L5", "L4", "L3b"], first.Select(j => j.Id));
        Assert.All(first, j => Assert.Equal("k", j.Owner));
        // Jobs created after the first page (newer) and one created "in the past" by a slow submitter.
        await Store.EnqueueAsync(Job("L6", at: T0 + TimeSpan.FromSeconds(6)), 100, Ct);
        await Store.EnqueueAsync(Job("L7", at: T0 + TimeSpan.FromSeconds(7)), 100, Ct);
        var second = await Store.ListAsync(new JobListQuery("k", [], CursorOf(first[^1]), 3), Ct);
        Assert.Equal(["L3a", "L2", "L1"], second.Select(j => j.Id));
        Assert.Equal(["L0"], await PageAsync("k", CursorOf(second[^1]), 3));
        Assert.Equal(["L7", "L6", "L5"], await PageAsync("k", null, 3));
        Assert.Equal(["oL5", "oL4"], await PageAsync("other", null, 2));
        Assert.Empty(await PageAsync("nobody", null, 10));

        // Queued jobs carry the same queue position as GetAsync gives (the other owner's jobs count too).
        foreach (var job in await Store.ListAsync(new JobListQuery("k", [], null, 100), Ct))
            Assert.Equal((await Store.GetAsync(job.Id, Ct))!.QueuePosition, job.QueuePosition);
    }

    [Fact]
    public async Task Owner_list_filters_by_status()
    {
        for (var i = 0; i < 5; i++) await Store.EnqueueAsync(Job($"s{i}", at: T0 + TimeSpan.FromSeconds(i)), 100, Ct);
        await Store.ClaimNextAsync("w", Lease, T0, Ct); // s0
        await Store.CompleteAsync("s0", "w", new JobCompletion(JobStatus.Succeeded, ResultFor("s0"), null, 1), T0, Ct);
        await Store.ClaimNextAsync("w", Lease, T0, Ct); // s1 stays running
        await Store.RequestCancelAsync("s2", T0, Ct);

        Assert.Equal(["s2", "s0"], await PageAsync("k", null, 10, JobStatus.Succeeded, JobStatus.Canceled));
        Assert.Equal(["s1"], await PageAsync("k", null, 10, JobStatus.Running));
        Assert.Empty(await PageAsync("k", null, 10, JobStatus.Failed));
        var queued = await Store.ListAsync(new JobListQuery("k", [JobStatus.Queued], null, 1), Ct);
        Assert.Equal("s4", Assert.Single(queued).Id);
        Assert.Equal(2, queued[0].QueuePosition);
        Assert.Equal(["s3"], await PageAsync("k", CursorOf(queued[0]), 1, JobStatus.Queued));
        Assert.Equal(["s4", "s3", "s2", "s1", "s0"], await PageAsync("k", null, 10));
    }

    [Fact]
    public async Task Delete_removes_a_finished_job_with_its_events_and_deliveries_and_leaves_unfinished_ones()
    {
        await Store.EnqueueAsync(Job("d1", webhook: "http://hook"), 10, Ct);
        await Store.EnqueueAsync(Job("d2", webhook: "http://hook"), 10, Ct);
        await Store.ClaimNextAsync("w", Lease, T0, Ct);
        await Store.CompleteAsync("d1", "w", new JobCompletion(JobStatus.Succeeded, ResultFor("d1"), null, 1), T0, Ct);
        Assert.NotEmpty(await Store.GetDeliveriesAsync("d1", Ct)); // pending ones: deleted too

        Assert.Equal(DeleteOutcome.NotFound, (await Store.DeleteAsync("d1", "someone-else", Ct)).Outcome);
        Assert.NotNull(await Store.GetAsync("d1", Ct));
        var deleted = await Store.DeleteAsync("d1", "k", Ct);
        Assert.Equal(DeleteOutcome.Deleted, deleted.Outcome);
        Assert.Equal(JobStatus.Succeeded, deleted.Job!.Status);
        Assert.Equal(["inputs/d1", "results/d1.png"], deleted.Blobs);
        Assert.Null(await Store.GetAsync("d1", Ct));
        Assert.Empty(await Store.GetEventsAsync("d1", 0, 100, Ct));
        Assert.Empty(await Store.GetDeliveriesAsync("d1", Ct));
        Assert.Equal(DeleteOutcome.NotFound, (await Store.DeleteAsync("d1", "k", Ct)).Outcome);
        Assert.Equal(DeleteOutcome.NotFound, (await Store.DeleteAsync("nope", "k", Ct)).Outcome);

        // Queued, then running: not deleted, nothing of it touched.
        var queued = await Store.DeleteAsync("d2", "k", Ct);
        Assert.Equal((DeleteOutcome.NotFinished, JobStatus.Queued), (queued.Outcome, queued.Job!.Status));
        Assert.Empty(queued.Blobs);
        await Store.ClaimNextAsync("w", Lease, T0, Ct);
        Assert.Equal(DeleteOutcome.NotFinished, (await Store.DeleteAsync("d2", "k", Ct)).Outcome);
        Assert.Equal(["queued", "started"], (await Store.GetEventsAsync("d2", 0, 100, Ct)).Select(e => e.Type));
        Assert.True((await Store.RenewLeaseAsync("d2", "w", Lease, T0, Ct)).Held);
        Assert.Equal(["d2"], await PageAsync("k", null, 10));

        // A failed job has only its input; one whose files the retention sweep took has none left to delete.
        await Store.CompleteAsync("d2", "w", new JobCompletion(JobStatus.Failed, null, new JobError("x", "X", "x"), 1), T0, Ct);
        await Store.MarkResultExpiredAsync("d2", Ct);
        var expired = await Store.DeleteAsync("d2", "k", Ct);
        Assert.Equal(DeleteOutcome.Deleted, expired.Outcome);
        Assert.Empty(expired.Blobs);
        Assert.Empty(await PageAsync("k", null, 10));
        Assert.Equal(0, (await Store.GetCountsAsync(Ct)).Failed);
    }

    [Fact]
    public async Task Delete_racing_the_worker_and_the_retention_sweep_never_removes_a_running_job_nor_a_job_twice()
    {
        const int n = 12;
        for (var i = 0; i < n; i++) await Store.EnqueueAsync(Job($"r{i:00}"), 100, Ct);
        var running = new List<JobRecord>();
        while (await Store.ClaimNextAsync("w", Lease, T0, Ct) is { } job) running.Add(job);
        Assert.Equal(n, running.Count);

        // Completions, owner deletes and the sweep all at once: a delete either sees the job running (refused) or
        // finished (deleted, unless the sweep took it first, then not found); every completion lands.
        var completions = running.Select(j => Task.Run(() => Store.CompleteAsync(j.Id, "w", new JobCompletion(JobStatus.Succeeded, ResultFor(j.Id), null, 1), T0, Ct))).ToList();
        var deletes = running.Select(j => Task.Run(async () =>
        {
            var outcomes = new List<DeleteOutcome>();
            for (var attempt = 0; attempt < 50; attempt++)
            {
                var outcome = (await Store.DeleteAsync(j.Id, "k", Ct)).Outcome;
                outcomes.Add(outcome);
                if (outcome != DeleteOutcome.NotFinished) break;
                await Task.Delay(5);
            }
            return (j.Id, Outcomes: outcomes);
        })).ToList();
        var swept = new List<string>();
        for (var round = 0; round < 20; round++)
        {
            swept.AddRange((await Store.DeleteFinishedJobsAsync(T0 + TimeSpan.FromDays(30), 3, Ct)).Select(e => e.JobId));
            await Task.Delay(2);
        }
        Assert.All(await Task.WhenAll(completions), Assert.NotNull);
        var byOwner = (await Task.WhenAll(deletes)).Where(d => d.Outcomes[^1] == DeleteOutcome.Deleted).Select(d => d.Id).ToList();
        swept.AddRange((await Store.DeleteFinishedJobsAsync(T0 + TimeSpan.FromDays(30), 100, Ct)).Select(e => e.JobId));
        Assert.Empty(byOwner.Intersect(swept));
        Assert.Equal(running.Select(j => j.Id).Order(), byOwner.Concat(swept).Order());
        Assert.Empty(await PageAsync("k", null, 100));
    }
}

public sealed class SqliteJobStoreContractTests : JobStoreContractTests
{
    private readonly string _dir = ServiceHost.NewDataDirectory();

    protected override Task<IJobStore> CreateStoreAsync() => Task.FromResult<IJobStore>(new SqliteJobStore(
        Microsoft.Extensions.Options.Options.Create(new StorageOptions { DataDirectory = _dir }), new JobTransitionEffectsFactory()));

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}

/// <summary>The same contract on a real PostgreSQL server (OMNI_TEST_POSTGRES), each test in a fresh schema.</summary>
public sealed class PostgresJobStoreContractTests : JobStoreContractTests
{
    private PostgresTestSchema? _schema;
    private Npgsql.NpgsqlDataSource? _dataSource;

    protected override async Task<IJobStore> CreateStoreAsync()
    {
        _schema = await PostgresTestSchema.CreateAsync();
        _dataSource = _schema.NewDataSource();
        return new PostgresJobStore(_dataSource, Microsoft.Extensions.Options.Options.Create(new StorageOptions()), new JobTransitionEffectsFactory());
    }

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        if (_dataSource is not null) await _dataSource.DisposeAsync();
        if (_schema is not null) await _schema.DisposeAsync();
    }
}
