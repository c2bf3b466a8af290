using System.Diagnostics.Metrics;
using OmniConsistency.Inference.BuiltIn;
using OmniConsistency.Inference.Pipelines;
using Xunit;

namespace OmniConsistency.Inference.Tests.Pipelines;

/// <summary>The engine's use of the LoRA cache: configured styles preloaded at start, hits afterwards, metrics published.</summary>
public class EngineLoraCacheTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task ConfiguredStylesArePreloadedAndLaterRunsAreCacheHitsWithBytesPublished()
    {
        var data = Directory.CreateTempSubdirectory("engine-preload-").FullName;
        try
        {
            using var engine = StylizationEngine.Create(new StylizationEngineOptions
            {
                DataDirectory = data, Device = "cpu", PreloadStyles = [BuiltInModel.DemoStyleName],
            });
            var empty = engine.LoraCacheMetrics!;
            Assert.Equal((0, 0L), (empty.Entries, empty.Bytes));

            Assert.Empty(await engine.PreloadStylesAsync(Ct));
            var preloaded = engine.LoraCacheMetrics!;
            Assert.Equal((1, 1L, 0), (preloaded.Entries, preloaded.DiskLoads, preloaded.LeasedEntries));
            Assert.True(preloaded.Bytes > 0 && preloaded.Bytes <= preloaded.BudgetBytes);

            var request = BuiltInEngineFixture.SmallRequest() with { Steps = 1, Styles = [new StyleSelection(BuiltInModel.DemoStyleName, 0.7)] };
            await engine.RunAsync(request, null, Ct);
            var after = engine.LoraCacheMetrics!;
            Assert.Equal((1L, 1L, 0), (after.Hits, after.DiskLoads, after.LeasedEntries));

            // The byte level is a gauge on the engine's meter (counters for hits, misses, evictions and loads beside it).
            var observed = new List<(long Value, string? Tier)>();
            using var listener = new MeterListener();
            listener.InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == "OmniConsistency.Inference" && instrument.Name == "lora_cache_bytes") l.EnableMeasurementEvents(instrument);
            };
            listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
            {
                string? tier = null;
                foreach (var tag in tags) if (tag.Key == "tier") tier = tag.Value as string;
                lock (observed) observed.Add((value, tier));
            });
            listener.Start();
            listener.RecordObservableInstruments();
            // Other engines in this process publish on meters of the same name; this one's level is among them.
            lock (observed) Assert.Contains((after.Bytes, "working"), observed);
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }
    }

    [Fact]
    public void PreloadingAStyleTheCatalogDoesNotHaveFailsAtStart()
    {
        var data = Directory.CreateTempSubdirectory("engine-preload-").FullName;
        try
        {
            var e = Assert.Throws<ArgumentException>(() => StylizationEngine.Create(new StylizationEngineOptions
            {
                DataDirectory = data, Device = "cpu", PreloadStyles = ["no-such-style"],
            }));
            Assert.Contains("no-such-style", e.Message);
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }
    }
}
