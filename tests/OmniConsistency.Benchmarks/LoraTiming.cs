using System.Diagnostics;

namespace OmniConsistency.Benchmarks;

/// <summary>Wall and process-CPU milliseconds of an action. CPU time is the steadier figure on a shared machine:
/// waiting for a core does not count.</summary>
public readonly record struct LoraTiming(double Wall, double Cpu)
{
    public static LoraTiming operator -(LoraTiming a, LoraTiming b) => new(a.Wall - b.Wall, a.Cpu - b.Cpu);

    public static LoraTiming Once(Action action)
    {
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        action();
        var wall = sw.Elapsed.TotalMilliseconds;
        return new(wall, (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalMilliseconds);
    }

    /// <summary>Mean over n runs timed together (for actions far below the clock's resolution).</summary>
    public static LoraTiming Mean(Action action, int n, int warmup = 10)
    {
        for (int i = 0; i < warmup; i++) action();
        var t = Once(() => { for (int i = 0; i < n; i++) action(); });
        return new(t.Wall / n, t.Cpu / n);
    }

    public static LoraTiming Median(Action action, int n, int warmup = 1)
    {
        for (int i = 0; i < warmup; i++) action();
        var runs = Enumerable.Range(0, n).Select(_ => Once(action)).ToList();
        return new(Mid(runs.Select(r => r.Wall)), Mid(runs.Select(r => r.Cpu)));
    }

    /// <summary>Variants run round by round so that load changes hit all alike; the median of each.</summary>
    public static LoraTiming[] Interleaved(IReadOnlyList<Action> variants, int rounds, int warmup = 1)
    {
        foreach (var v in variants) for (int i = 0; i < warmup; i++) v();
        var runs = variants.Select(_ => new List<LoraTiming>()).ToArray();
        for (int r = 0; r < rounds; r++)
            for (int i = 0; i < variants.Count; i++) runs[i].Add(Once(variants[i]));
        return runs.Select(x => new LoraTiming(Mid(x.Select(t => t.Wall)), Mid(x.Select(t => t.Cpu)))).ToArray();
    }

    private static double Mid(IEnumerable<double> xs)
    {
        var a = xs.OrderBy(x => x).ToArray();
        return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2;
    }
}
