using System.Diagnostics;

namespace OmniConsistency.Benchmarks;

/// <summary>A benchmark the runner discovers by reflection; it prints its own table (markdown) to stdout.</summary>
public interface IBenchmark
{
    string Name { get; }
    string Description { get; }
    void Run(string[] args);
}

public static class Measure
{
    /// <summary>Median wall time in milliseconds of <paramref name="iterations"/> runs after <paramref name="warmup"/> runs.</summary>
    public static double MedianMs(Action action, int iterations = 5, int warmup = 1)
    {
        for (int i = 0; i < warmup; i++) action();
        var times = new double[iterations];
        for (int i = 0; i < iterations; i++)
        {
            var sw = Stopwatch.StartNew();
            action();
            times[i] = sw.Elapsed.TotalMilliseconds;
        }
        Array.Sort(times);
        return times[iterations / 2];
    }

    /// <summary>Interleaves several variants round by round so machine noise hits all alike; returns the median ms of each.</summary>
    public static double[] InterleavedMedianMs(IReadOnlyList<Action> variants, int rounds = 5, int warmup = 1)
    {
        foreach (var v in variants) for (int i = 0; i < warmup; i++) v();
        var times = variants.Select(_ => new List<double>()).ToArray();
        for (int r = 0; r < rounds; r++)
            for (int i = 0; i < variants.Count; i++)
            {
                var sw = Stopwatch.StartNew();
                variants[i]();
                times[i].Add(sw.Elapsed.TotalMilliseconds);
            }
        return times.Select(t => { t.Sort(); return t[t.Count / 2]; }).ToArray();
    }

    /// <summary>Peak resident set size of this process so far (VmHWM), in bytes; 0 where /proc is unavailable.</summary>
    public static long PeakRssBytes() => ReadStatusKb("VmHWM:") * 1024;

    public static long CurrentRssBytes() => ReadStatusKb("VmRSS:") * 1024;

    private static long ReadStatusKb(string field)
    {
        const string path = "/proc/self/status";
        if (!File.Exists(path)) return 0;
        foreach (var line in File.ReadLines(path))
            if (line.StartsWith(field, StringComparison.Ordinal))
                return long.Parse(line[field.Length..].Trim().Split(' ')[0]);
        return 0;
    }
}
