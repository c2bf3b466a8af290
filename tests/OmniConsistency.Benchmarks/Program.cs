using System.Diagnostics;
using System.Reflection;
using OmniConsistency.Benchmarks;

// A small runner rather than BenchmarkDotNet: these benchmarks compare configurations of one model in one process
// (ratios on a noisy 2-core machine), measure peak RSS of whole loads, and need a fresh process per memory figure,
// none of which BenchmarkDotNet's per-method statistics give directly.
var benchmarks = Assembly.GetExecutingAssembly().GetTypes()
    .Where(t => typeof(IBenchmark).IsAssignableFrom(t) && !t.IsAbstract && !t.IsInterface)
    .Select(t => (IBenchmark)Activator.CreateInstance(t)!)
    .OrderBy(b => b.Name, StringComparer.Ordinal)
    .ToList();

if (args.Length == 0 || args[0] is "-h" or "--help" or "list")
{
    Console.WriteLine("usage: dotnet run -c Release --project tests/OmniConsistency.Benchmarks -- <name|all> [options]");
    foreach (var b in benchmarks) Console.WriteLine($"  {b.Name,-28} {b.Description}");
    return 0;
}

var selected = args[0] == "all" ? benchmarks : benchmarks.Where(b => b.Name == args[0]).ToList();
if (selected.Count == 0)
{
    Console.Error.WriteLine($"unknown benchmark '{args[0]}'");
    return 2;
}
foreach (var b in selected)
{
    Console.WriteLine($"## {b.Name}: {b.Description}");
    var sw = Stopwatch.StartNew();
    b.Run(args.Skip(1).ToArray());
    Console.WriteLine($"(took {sw.Elapsed.TotalSeconds:F1} s)");
}
return 0;
