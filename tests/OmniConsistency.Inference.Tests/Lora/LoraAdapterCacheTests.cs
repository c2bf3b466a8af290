using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Lora;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Lora;

public class LoraAdapterCacheTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static readonly Dictionary<string, LinearShape> Shapes = FluxLinearShapes.For(8, 1, 1, inChannels: 16, joint: 8, pooled: 8);
    private static readonly LoraModelTargets Targets = new(new LoraTargetShapes(Shapes));
    private static readonly string[] Modules = ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.ff.net.0.proj", "proj_out"];

    // Every file has the same size: rank 4 on three modules.
    private static readonly long AdapterBytes = Modules.Sum(m => 4 * (Shapes[m].In + Shapes[m].Out)) * 4;

    private static string Write(TempFolder dir, string name, long seed = 1)
    {
        var g = new Generator((ulong)seed);
        var t = new Dictionary<string, Tensor>();
        using var scope = NewDisposeScope();
        foreach (var m in Modules)
        {
            t[$"transformer.{m}.lora_A.weight"] = randn([4, Shapes[m].In], generator: g);
            t[$"transformer.{m}.lora_B.weight"] = randn([Shapes[m].Out, 4], generator: g);
        }
        var path = dir.File(name);
        SafetensorsWriter.Save(path, t);
        return path;
    }

    private static LoraAdapterCache Cache(long budgetEntries, LoraCacheOptions? options = null, Device? device = null) =>
        new(Targets, ScalarType.Float32, device ?? CPU, (options ?? new LoraCacheOptions()) with { HostBudgetBytes = budgetEntries * AdapterBytes + AdapterBytes / 2 });

    [Fact]
    public async Task NeverExceedsItsBudgetAndEvictsLeastRecentlyUsed()
    {
        using var dir = new TempFolder();
        var paths = Enumerable.Range(0, 6).Select(i => Write(dir, $"s{i}.safetensors", i)).ToArray();
        using var cache = Cache(2);
        foreach (var p in paths)
        {
            using (var lease = await cache.AcquireAsync(p, Ct)) Assert.True(lease.IsCached);
            var m = cache.Metrics;
            Assert.True(m.Bytes <= m.BudgetBytes, $"{m.Bytes} > {m.BudgetBytes}");
            Assert.True(m.Entries <= 2);
        }
        Assert.Equal(4, cache.Metrics.Evictions);
        Assert.Equal(6, cache.Metrics.DiskLoads);

        // s4, s5 cached; touch s4, then s0 evicts s5 (least recently used), not s4.
        (await cache.AcquireAsync(paths[4], Ct)).Dispose();
        (await cache.AcquireAsync(paths[0], Ct)).Dispose();
        long loads = cache.Metrics.DiskLoads;
        (await cache.AcquireAsync(paths[4], Ct)).Dispose();
        Assert.Equal(loads, cache.Metrics.DiskLoads);
        (await cache.AcquireAsync(paths[5], Ct)).Dispose();
        Assert.Equal(loads + 1, cache.Metrics.DiskLoads);

        // Many at once, released as they come: still within budget.
        var leases = await Task.WhenAll(paths.Select(p => Task.Run(async () =>
        {
            var l = await cache.AcquireAsync(p, Ct);
            var m = cache.Metrics;
            l.Dispose();
            return m;
        })));
        Assert.All(leases, m => Assert.True(m.Bytes <= m.BudgetBytes));
        Assert.Equal(0, cache.Metrics.LeasedEntries);
    }

    [Fact]
    public async Task ConcurrentRequestsForOneFileShareOneLoad()
    {
        using var dir = new TempFolder();
        var path = Write(dir, "shared.safetensors");
        using var cache = Cache(4);
        var leases = await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(() => cache.AcquireAsync(path, Ct))));
        var m = cache.Metrics;
        Assert.Equal(1, m.DiskLoads);
        Assert.Equal(16, m.Hits + m.Misses);
        Assert.Equal(15, m.Hits + m.SharedLoads);
        Assert.All(leases, l => Assert.Same(leases[0].Adapter, l.Adapter));
        Assert.Equal(1, m.LeasedEntries);
        foreach (var l in leases) l.Dispose();
        Assert.Equal(0, cache.Metrics.LeasedEntries);
    }

    [Fact]
    public async Task TwoRequestsArrivingDuringOneLoadJoinIt()
    {
        // A file large enough that its load (header, read, convert on a pool thread) outlasts the few microseconds
        // between the two calls below: the second must join the first's load, not start its own.
        using var dir = new TempFolder();
        var shapes = FluxLinearShapes.For(512, 1, 1, inChannels: 64, joint: 512, pooled: 512);
        var targets = new LoraModelTargets(new LoraTargetShapes(shapes));
        var path = dir.File("big.safetensors");
        using (var scope = NewDisposeScope())
        {
            var g = new Generator(5);
            var t = new Dictionary<string, Tensor>();
            foreach (var module in shapes.Keys.Where(k => k.StartsWith("transformer_blocks.0.", StringComparison.Ordinal)))
            {
                t[$"transformer.{module}.lora_A.weight"] = randn([64, shapes[module].In], generator: g);
                t[$"transformer.{module}.lora_B.weight"] = randn([shapes[module].Out, 64], generator: g);
            }
            SafetensorsWriter.Save(path, t);
        }
        using var cache = new LoraAdapterCache(targets, ScalarType.Float32, CPU, new LoraCacheOptions { HostBudgetBytes = 1L << 30 });
        var first = cache.AcquireAsync(path, Ct);
        var second = cache.AcquireAsync(path, Ct);
        Assert.False(first.IsCompleted, "the load finished before the second request arrived; the test file is too small");
        using var a = await first;
        using var b = await second;
        var m = cache.Metrics;
        Assert.Equal((1L, 1L, 2L, 0L), (m.DiskLoads, m.SharedLoads, m.Misses, m.Hits));
        Assert.Same(a.Adapter, b.Adapter);
        Assert.True(a.IsCached && b.IsCached);
        Assert.Equal(1, m.LeasedEntries);
        a.Dispose();
        Assert.Equal(1, cache.Metrics.LeasedEntries);
        b.Dispose();
        Assert.Equal(0, cache.Metrics.LeasedEntries);
    }

    [Fact]
    public async Task LeasedEntriesAreNotEvicted()
    {
        using var dir = new TempFolder();
        var a = Write(dir, "a.safetensors", 1);
        var b = Write(dir, "b.safetensors", 2);
        var c = Write(dir, "c.safetensors", 3);
        using var cache = Cache(2);
        using var held = await cache.AcquireAsync(a, Ct);
        (await cache.AcquireAsync(b, Ct)).Dispose();
        (await cache.AcquireAsync(c, Ct)).Dispose(); // evicts b, the only unleased entry
        Assert.False(held.Adapter.IsDisposed);
        long loads = cache.Metrics.DiskLoads;
        (await cache.AcquireAsync(a, Ct)).Dispose();
        Assert.Equal(loads, cache.Metrics.DiskLoads);

        // Everything leased: a new adapter is handed out uncached and freed with its lease.
        using var held2 = await cache.AcquireAsync(c, Ct);
        var extra = await cache.AcquireAsync(b, Ct);
        Assert.False(extra.IsCached);
        Assert.Equal(1, cache.Metrics.Uncached);
        Assert.True(cache.Metrics.Bytes <= cache.Metrics.BudgetBytes);
        extra.Dispose();
        Assert.True(extra.Adapter.IsDisposed);
        Assert.False(held.Adapter.IsDisposed);
    }

    [Fact]
    public async Task AdapterLargerThanTheBudgetIsUsedUncached()
    {
        using var dir = new TempFolder();
        var a = Write(dir, "a.safetensors");
        using var cache = new LoraAdapterCache(Targets, ScalarType.Float32, CPU, new LoraCacheOptions { HostBudgetBytes = AdapterBytes / 2 });
        using var lease = await cache.AcquireAsync(a, Ct);
        Assert.False(lease.IsCached);
        Assert.Equal(0, cache.Metrics.Bytes);
    }

    [Fact]
    public async Task FailedLoadsReachEveryWaiterAndCanBeRetried()
    {
        using var dir = new TempFolder();
        var path = dir.File("bad.safetensors");
        File.WriteAllText(path, "garbage");
        using var cache = Cache(2);
        var attempts = Enumerable.Range(0, 4).Select(_ => Task.Run(() => cache.AcquireAsync(path, Ct))).ToArray();
        foreach (var t in attempts) await Assert.ThrowsAsync<LoraFormatException>(() => t);
        Assert.True(cache.Metrics.LoadFailures >= 1);
        Assert.Equal(0, cache.Metrics.Entries);
        Write(dir, "bad.safetensors");
        using var lease = await cache.AcquireAsync(path, Ct);
        Assert.True(lease.IsCached);
    }

    [Fact]
    public async Task ChangedFileIsLoadedAfresh()
    {
        using var dir = new TempFolder();
        var path = Write(dir, "a.safetensors", 1);
        using var cache = Cache(2);
        var first = await cache.AcquireAsync(path, Ct);
        first.Dispose();
        Write(dir, "a.safetensors", 2);
        File.SetLastWriteTimeUtc(path, DateTime.UtcNow.AddMinutes(1));
        using var second = await cache.AcquireAsync(path, Ct);
        Assert.NotSame(first.Adapter, second.Adapter);
        Assert.Equal(2, cache.Metrics.DiskLoads);
    }

    [Fact]
    public async Task PreloadAndCancellation()
    {
        using var dir = new TempFolder();
        var a = Write(dir, "a.safetensors", 1);
        var b = Write(dir, "b.safetensors", 2);
        var bad = dir.File("bad.safetensors");
        File.WriteAllText(bad, "x");
        using var cache = Cache(3, new LoraCacheOptions { Preload = [a, bad] });
        var failures = await cache.PreloadAsync([b], Ct);
        Assert.Single(failures);
        Assert.Equal(2, cache.Metrics.Entries);
        (await cache.AcquireAsync(a, Ct)).Dispose();
        Assert.Equal(1, cache.Metrics.Hits);

        // A waiter that gives up still leaves the entry unleased once the load ends.
        var c = Write(dir, "c.safetensors", 3);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cache.AcquireAsync(c, new CancellationToken(true)));
        for (int i = 0; i < 100 && cache.Metrics.Entries < 3; i++) await Task.Delay(50, Ct);
        for (int i = 0; i < 100 && cache.Metrics.LeasedEntries > 0; i++) await Task.Delay(50, Ct);
        Assert.Equal(3, cache.Metrics.Entries);
        Assert.Equal(0, cache.Metrics.LeasedEntries);
    }

    [Fact]
    public async Task AcceleratorModelKeepsHostCopiesForReupload()
    {
        // The meta device stands in for an accelerator: adapters live "on the device", host copies on the CPU.
        using var dir = new TempFolder();
        var a = Write(dir, "a.safetensors", 1);
        var b = Write(dir, "b.safetensors", 2);
        var meta = new Device(DeviceType.META);
        using var cache = new LoraAdapterCache(Targets, ScalarType.Float32, meta, new LoraCacheOptions
        {
            DeviceBudgetBytes = AdapterBytes + AdapterBytes / 2,
            HostBudgetBytes = 3 * AdapterBytes,
        });
        using (var lease = await cache.AcquireAsync(a, Ct)) Assert.Equal(DeviceType.META, lease.Adapter.Device.type);
        (await cache.AcquireAsync(b, Ct)).Dispose();
        (await cache.AcquireAsync(a, Ct)).Dispose(); // evicted from the device, uploaded again from its host copy
        var m = cache.Metrics;
        Assert.Equal(2, m.DiskLoads);
        Assert.Equal(1, m.HostCopyHits);
        Assert.Equal(2, m.HostCopyEntries);
        Assert.True(m.Bytes <= m.BudgetBytes && m.HostCopyBytes <= m.HostCopyBudgetBytes);
    }
}
