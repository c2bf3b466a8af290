using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// The service with <see cref="TestEngine"/> as a separate OS process (OmniConsistency.Api.TestServer) on a free
/// loopback port, started with the given command-line arguments and waited for until /readyz answers 200.
/// Its output is kept (last lines) for failure messages.
/// </summary>
public sealed class TestServerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _output = new();
    public HttpClient Client { get; }
    public int Pid => _process.Id;
    public string Name { get; }

    private TestServerProcess(string name, Process process, Uri baseAddress)
    {
        Name = name;
        _process = process;
        Client = new HttpClient { BaseAddress = baseAddress, Timeout = TimeSpan.FromSeconds(30) };
    }

    public static async Task<TestServerProcess> StartAsync(string name, IEnumerable<string> args, TimeSpan? readyTimeout = null)
    {
        var port = FreePort();
        var dll = Path.Combine(AppContext.BaseDirectory.Replace("OmniConsistency.Api.Tests", "OmniConsistency.Api.TestServer"), "OmniConsistency.Api.TestServer.dll");
        Assert.True(File.Exists(dll), $"test server not built: {dll}");
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(dll);
        info.ArgumentList.Add("--urls");
        info.ArgumentList.Add($"http://127.0.0.1:{port}");
        foreach (var a in args) info.ArgumentList.Add(a);
        var process = Process.Start(info)!;
        var server = new TestServerProcess(name, process, new Uri($"http://127.0.0.1:{port}/"));
        process.OutputDataReceived += (_, e) => server.Keep(e.Data);
        process.ErrorDataReceived += (_, e) => server.Keep(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var deadline = DateTime.UtcNow + (readyTimeout ?? TimeSpan.FromSeconds(60));
        while (true)
        {
            try
            {
                using var r = await server.Client.GetAsync("readyz");
                if (r.StatusCode == HttpStatusCode.OK) return server;
            }
            catch (HttpRequestException) { }
            if (process.HasExited || DateTime.UtcNow > deadline)
            {
                var output = server.Output;
                await server.DisposeAsync();
                throw new InvalidOperationException($"{name} did not become ready (exited: {process.HasExited}):\n{output}");
            }
            await Task.Delay(100);
        }
    }

    private void Keep(string? line)
    {
        if (line is null) return;
        _output.Enqueue(line);
        while (_output.Count > 200) _output.TryDequeue(out _);
    }

    /// <summary>The process's last output lines.</summary>
    public string Output => string.Join('\n', _output);

    /// <summary>SIGKILL: no shutdown code runs, exactly like a crashed machine as far as the store can tell.</summary>
    public void Kill()
    {
        if (_process.HasExited) return;
        _process.Kill(entireProcessTree: true);
        _process.WaitForExit();
    }

    public ValueTask DisposeAsync()
    {
        Client.Dispose();
        Kill();
        _process.Dispose();
        return ValueTask.CompletedTask;
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
