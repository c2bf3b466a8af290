using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Nn;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Benchmarks;

/// <summary>
/// Loads a generated ~1 GiB bf16 checkpoint of FLUX-shaped tensors into a bf16 module and reports the load time and
/// the peak RSS (VmHWM). Each load runs in a fresh child process (this executable re-invoked with a hidden
/// sub-command), so neither generating the file nor an earlier variant inflates the figure. Variants:
/// <list type="bullet">
/// <item><c>reader</c>: the library path, SafetensorsCheckpoint + ModuleWeightLoader.</item>
/// <item><c>mmap</c>: map the whole file with torch.from_file (MAP_PRIVATE) and copy_ each tensor out of the mapping.</item>
/// <item><c>read-all</c>: read the whole file into memory first, then copy each tensor into its parameter.</item>
/// </list>
/// "warm" loads find the file in the page cache; "cold" ones first evict it (posix_fadvise DONTNEED on this file only).
/// </summary>
public sealed class LoadingBenchmark : IBenchmark
{
    private const string ChildCommand = "--child";
    private const string ResultPrefix = "LOADING-RESULT ";
    private static readonly string[] Variants = ["reader", "mmap", "read-all"];

    public string Name => "loading";
    public string Description => "load a generated ~1 GiB bf16 checkpoint into a module: time, GB/s, peak RSS (fresh process) vs file size";

    public void Run(string[] args)
    {
        if (args.Length > 0 && args[0] == ChildCommand)
        {
            RunChild(args[1], args[2], int.Parse(args[3], CultureInfo.InvariantCulture));
            return;
        }
        double gib = Option(args, "--gib", 1.0);
        int rounds = (int)Option(args, "--rounds", 3);
        bool cold = !args.Contains("--no-cold");
        var variants = args.Contains("--variant") ? [args[Array.IndexOf(args, "--variant") + 1]] : Variants;

        int blocks = Math.Max(1, (int)Math.Round(gib * (1L << 30) / LoadingModel.BlockBytes(2)));
        var dir = Directory.CreateTempSubdirectory("omni-loading-bench-").FullName;
        var path = Path.Combine(dir, "model.safetensors");
        try
        {
            var sw = Stopwatch.StartNew();
            double expectedChecksum = Generate(path, blocks);
            long fileBytes = new FileInfo(path).Length;
            Console.WriteLine($"generated {path}: {blocks} FLUX single-block-shaped blocks, {fileBytes / 1e9:F3} GB ({fileBytes / (double)(1L << 30):F3} GiB) in {sw.Elapsed.TotalSeconds:F1} s");

            var results = new List<(string Variant, string Cache, ChildResult R)>();
            for (int r = 0; r < rounds; r++)
                foreach (var v in variants) results.Add((v, "warm", RunInChild(v, path, blocks)));
            if (cold)
                foreach (var v in variants)
                {
                    EvictFromPageCache(path);
                    results.Add((v, "cold", RunInChild(v, path, blocks)));
                }

            var bad = results.Where(x => x.R.Checksum != expectedChecksum).ToList();
            foreach (var (v, c, r) in bad) Console.WriteLine($"CHECKSUM MISMATCH: {v} ({c}) got {r.Checksum:R}, expected {expectedChecksum:R}");

            Console.WriteLine();
            Console.WriteLine($"file: {fileBytes / 1e9:F3} GB, {CountTensors(path)} tensors; torch threads {torch.get_num_threads()}; {Environment.ProcessorCount} cores");
            Console.WriteLine();
            Console.WriteLine("| variant | cache | runs | load s (median) | GB/s | peak RSS (VmHWM) GB | peak / file | RSS before load GB | (peak - before) / file |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
            foreach (var g in results.GroupBy(x => (x.Variant, x.Cache)))
            {
                var times = g.Select(x => x.R.LoadSeconds).OrderBy(t => t).ToList();
                double median = times[times.Count / 2];
                long peak = g.Max(x => x.R.PeakRssBytes);
                long before = g.Max(x => x.R.RssBeforeBytes);
                Console.WriteLine($"| {g.Key.Variant} | {g.Key.Cache} | {times.Count} | {median:F3} | {fileBytes / median / 1e9:F2} | {peak / 1e9:F3} | {peak / (double)fileBytes:F2} | {before / 1e9:F3} | {(peak - before) / (double)fileBytes:F2} |");
            }
            var readerPeak = results.Where(x => x.Variant == "reader").Select(x => x.R.PeakRssBytes).DefaultIfEmpty(0).Max();
            if (readerPeak > 0)
                Console.WriteLine($"\nreader peak RSS / file size = {readerPeak / (double)fileBytes:F2} (limit 1.5): {(readerPeak < 1.5 * fileBytes ? "OK" : "OVER LIMIT")}");
            if (bad.Count > 0) throw new InvalidOperationException("a variant loaded different data (checksum mismatch)");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static double Option(string[] args, string name, double fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? double.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
    }

    private static int CountTensors(string path)
    {
        using var f = SafetensorsFile.Open(path);
        return f.Tensors.Count;
    }

    /// <summary>Writes random bf16 weights for every parameter of the model; returns their checksum.</summary>
    private static double Generate(string path, int blocks)
    {
        using var scope = NewDisposeScope();
        using var meta = new LoadingModel(blocks, ParameterFactory.Meta(ScalarType.BFloat16));
        var gen = new Generator(1234);
        var tensors = meta.named_parameters()
            .Select(p => new KeyValuePair<string, Tensor>(p.name, randn(p.parameter.shape, ScalarType.BFloat16, generator: gen).mul_(0.02)))
            .ToList();
        SafetensorsWriter.Save(path, tensors);
        return Checksum(tensors.Select(t => t.Value));
    }

    /// <summary>Sum of the first elements of every tensor, in order: cheap, and identical only for identical data.</summary>
    private static double Checksum(IEnumerable<Tensor> tensors)
    {
        double sum = 0;
        foreach (var t in tensors)
        {
            using var scope = NewDisposeScope();
            var flat = t.flatten();
            sum += flat.narrow(0, 0, Math.Min(4096, flat.shape[0])).to(ScalarType.Float64).sum().item<double>();
        }
        return sum;
    }

    private sealed record ChildResult(double LoadSeconds, long PeakRssBytes, long RssBeforeBytes, double Checksum);

    private ChildResult RunInChild(string variant, string path, int blocks)
    {
        var exe = Environment.ProcessPath ?? throw new InvalidOperationException("cannot find this executable");
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(exe) == "dotnet") psi.ArgumentList.Add(typeof(LoadingBenchmark).Assembly.Location);
        foreach (var a in new[] { Name, ChildCommand, variant, path, blocks.ToString(CultureInfo.InvariantCulture) }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        var line = stdout.Split('\n').FirstOrDefault(l => l.StartsWith(ResultPrefix, StringComparison.Ordinal));
        if (p.ExitCode != 0 || line is null)
            throw new InvalidOperationException($"child '{variant}' failed (exit {p.ExitCode}):\n{stdout}\n{stderr.Result}");
        return JsonSerializer.Deserialize<ChildResult>(line[ResultPrefix.Length..])!;
    }

    private static void RunChild(string variant, string path, int blocks)
    {
        using var module = new LoadingModel(blocks, new ParameterFactory(ScalarType.BFloat16, CPU));
        var parameters = module.named_parameters().ToList();
        long before = Measure.CurrentRssBytes();
        var sw = Stopwatch.StartNew();
        switch (variant)
        {
            case "reader":
                using (var ckpt = SafetensorsCheckpoint.Open(path))
                    ModuleWeightLoader.Load(module, new CheckpointTensorSource(ckpt));
                break;
            case "mmap":
                LoadMapped(path, parameters);
                break;
            case "read-all":
                LoadReadAll(path, parameters);
                break;
            default:
                throw new ArgumentException($"unknown variant '{variant}'");
        }
        double seconds = sw.Elapsed.TotalSeconds;
        long peak = Measure.PeakRssBytes();
        var result = new ChildResult(seconds, peak, before, Checksum(parameters.Select(p => (Tensor)p.parameter)));
        Console.WriteLine(ResultPrefix + JsonSerializer.Serialize(result));
    }

    private static void LoadMapped(string path, List<(string name, TorchSharp.Modules.Parameter parameter)> parameters)
    {
        using var header = SafetensorsFile.Open(path);
        using var map = from_file(path, shared: false, size: header.FileLength / 2, dtype: ScalarType.BFloat16);
        using (no_grad())
            foreach (var (name, p) in parameters)
            {
                using var scope = NewDisposeScope();
                var info = header.Info(name);
                p.copy_(map.narrow(0, (header.DataStart + info.Begin) / 2, info.ElementCount).view(info.Shape));
            }
    }

    private static void LoadReadAll(string path, List<(string name, TorchSharp.Modules.Parameter parameter)> parameters)
    {
        using var header = SafetensorsFile.Open(path);
        using var all = empty(header.FileLength, ScalarType.Byte);
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1))
        {
            const long chunk = 1 << 30;
            for (long at = 0; at < header.FileLength; at += chunk)
            {
                using var part = all.narrow(0, at, Math.Min(chunk, header.FileLength - at));
                fs.ReadExactly(part.bytes);
            }
        }
        foreach (var (name, p) in parameters)
        {
            using var scope = NewDisposeScope();
            var info = header.Info(name);
            all.narrow(0, header.DataStart + info.Begin, info.ByteLength).bytes.CopyTo(p.bytes);
        }
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int posix_fadvise(int fd, long offset, long length, int advice);

    private const int PosixFadvDontNeed = 4;

    /// <summary>Drops this file's pages from the page cache (written back first), so the next read comes from disk.</summary>
    private static void EvictFromPageCache(string path)
    {
        if (!OperatingSystem.IsLinux()) return;
        using var fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        fs.Flush(flushToDisk: true);
        int rc = posix_fadvise((int)fs.SafeFileHandle.DangerousGetHandle(), 0, 0, PosixFadvDontNeed);
        if (rc != 0) Console.WriteLine($"posix_fadvise failed ({rc}); 'cold' figures are warm");
    }
}
