using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// The restart test with a real kill: the service runs as its own process (OmniConsistency.Api.TestServer), is
/// killed (SIGKILL) while one job runs and others wait, and a new process on the same data directory finishes
/// every job exactly once.
/// </summary>
public sealed class ProcessKillTests
{
    private sealed class ServerProcess : IAsyncDisposable
    {
        private readonly Process _process;
        public HttpClient Client { get; }

        private ServerProcess(Process process, Uri baseAddress)
        {
            _process = process;
            Client = new HttpClient { BaseAddress = baseAddress, Timeout = TimeSpan.FromSeconds(30) };
        }

        public static async Task<ServerProcess> StartAsync(string dataDirectory, int stepDelayMs)
        {
            var port = FreePort();
            var dll = Path.Combine(AppContext.BaseDirectory.Replace("OmniConsistency.Api.Tests", "OmniConsistency.Api.TestServer"), "OmniConsistency.Api.TestServer.dll");
            Assert.True(File.Exists(dll), $"test server not built: {dll}");
            var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var arg in new[]
                     {
                         dll, "--urls", $"http://127.0.0.1:{port}", $"--Omni:Storage:DataDirectory={dataDirectory}",
                         $"--Omni:Webhooks:Secret={ServiceHost.WebhookSecret}", "--Omni:Webhooks:AllowedNetworks:0=127.0.0.1/32",
                         "--Omni:Webhooks:RetryBaseDelay=00:00:00.300", "--Omni:Webhooks:PollInterval=00:00:00.200",
                         "--Omni:Queue:PollInterval=00:00:00.200", $"--TestEngine:StepDelayMs={stepDelayMs}", "--Serilog:MinimumLevel:Default=Warning",
                     })
                info.ArgumentList.Add(arg);
            var process = Process.Start(info)!;
            process.OutputDataReceived += (_, _) => { };
            process.ErrorDataReceived += (_, _) => { };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var server = new ServerProcess(process, new Uri($"http://127.0.0.1:{port}/"));
            var deadline = DateTime.UtcNow.AddSeconds(60);
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
                    await server.DisposeAsync();
                    throw new InvalidOperationException($"Test server did not become ready (exited: {process.HasExited}).");
                }
                await Task.Delay(100);
            }
        }

        public void Kill()
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
        }

        public ValueTask DisposeAsync()
        {
            Client.Dispose();
            if (!_process.HasExited) Kill();
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

    [Fact]
    public async Task Killed_process_with_running_and_queued_jobs_finishes_each_exactly_once_after_restart()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        // The receiver fails while the first process lives, so the webhook of the first job's start is still in the
        // outbox (possibly leased mid-round) when the process is killed; after the restart it must be delivered.
        var accept = false;
        receiver.Respond = _ => accept ? 200 : 500;
        var data = ServiceHost.NewDataDirectory();
        var ids = new List<string>();
        await using (var first = await ServerProcess.StartAsync(data, stepDelayMs: 200))
        {
            for (var seed = 1; seed <= 4; seed++)
                ids.Add((await first.Client.SubmitAsync(TestImages.Png(), ("steps", "20"), ("seed", seed.ToString()),
                    ("webhookUrl", receiver.Url), ("webhookEvents", "started,succeeded"))).Id());
            await first.Client.WaitForStatusAsync(ids[0], j => j.Status() == "running" && j.TryGetProperty("progress", out var p) && p.GetProperty("step").GetInt32() >= 2);
            await receiver.WaitForAsync(r => r.Requests.Any(q => q.Type == "stylization.started"));
            Assert.Equal("queued", (await first.Client.GetJobAsync(ids[3])).Status());
            first.Kill();
        }
        var failedBeforeKill = receiver.Requests.Where(r => r.Type == "stylization.started").Select(r => r.Id).Distinct().ToList();
        Assert.Empty(receiver.Delivered);
        accept = true;

        await using var second = await ServerProcess.StartAsync(data, stepDelayMs: 5);
        foreach (var id in ids) Assert.Equal("succeeded", (await second.Client.WaitForTerminalAsync(id, TimeSpan.FromSeconds(60))).Status());
        Assert.Equal(2, (await second.Client.GetJobAsync(ids[0])).GetProperty("attempts").GetInt32());
        foreach (var id in ids)
        {
            var events = (await second.Client.GetStringAsync($"v1/stylizations/{id}/events"))
                .Split('\n').Where(l => l.StartsWith("event: ", StringComparison.Ordinal)).Select(l => l[7..]).ToList();
            Assert.Equal(1, events.Count(e => e == "completed"));
        }
        // One succeeded message per job, and the start message that was failing at the kill got through.
        List<string?> SucceededJobs() => receiver.Delivered.Where(d => d.Type == "stylization.succeeded")
            .Select(d => d.Payload.GetProperty("data").GetProperty("id").GetString()).Distinct().ToList();
        await receiver.WaitForAsync(r => SucceededJobs().Count == 4 && failedBeforeKill.All(m => r.Delivered.Any(d => d.Id == m)), TimeSpan.FromSeconds(60));
        await Task.Delay(500);
        Assert.Equal(ids.Order(), SucceededJobs().Order());
        Assert.Equal(4, receiver.Delivered.Where(d => d.Type == "stylization.succeeded").Select(d => d.Id).Distinct().Count());
        Assert.All(receiver.Requests, r => Assert.True(r.SignatureValid));
    }
}
