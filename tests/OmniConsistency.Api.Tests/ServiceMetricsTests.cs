using System.Diagnostics.Metrics;
using OmniConsistency.Api.Observability;
using OmniConsistency.Api.Storage;

namespace OmniConsistency.Api.Tests;

public sealed class ServiceMetricsTests
{
    private static readonly JobCounts NoJobs = new(0, 0, 0, 0, 0);

    [Fact]
    public void Engine_gauges_are_read_at_each_scrape_with_their_tags_as_labels()
    {
        long working = 1234;
        using var meter = new Meter("OmniConsistency.Tests.Gauges." + Guid.NewGuid().ToString("N"));
        using var metrics = new ServiceMetrics();
        var name = "gauge_" + Guid.NewGuid().ToString("N")[..8];
        meter.CreateObservableGauge(name, () => new[]
        {
            new Measurement<long>(working, new KeyValuePair<string, object?>("tier", "working")),
            new Measurement<long>(7, new KeyValuePair<string, object?>("tier", "host-\"copy\"")),
        }, unit: "By", description: "Bytes held.");

        var text = metrics.ToPrometheus(NoJobs, engineReady: true, runningHere: 0);
        Assert.Contains($"# TYPE omni_{name} gauge\n", text);
        Assert.Contains($"# HELP omni_{name} Bytes held.\n", text);
        Assert.Contains($"omni_{name}{{tier=\"working\"}} 1234\n", text);
        Assert.Contains($"omni_{name}{{tier=\"host-\\\"copy\\\"\"}} 7\n", text);

        working = 99; // a level, not a sum: the next scrape shows the new value only
        text = metrics.ToPrometheus(NoJobs, engineReady: true, runningHere: 0);
        Assert.Contains($"omni_{name}{{tier=\"working\"}} 99\n", text);
        Assert.DoesNotContain("1234", text);
    }

    [Fact]
    public void Gauges_of_other_meters_are_not_exported()
    {
        using var meter = new Meter("Elsewhere." + Guid.NewGuid().ToString("N"));
        using var metrics = new ServiceMetrics();
        meter.CreateObservableGauge("foreign_gauge", () => 5L);
        Assert.DoesNotContain("foreign_gauge", metrics.ToPrometheus(NoJobs, engineReady: true, runningHere: 0));
    }
}
