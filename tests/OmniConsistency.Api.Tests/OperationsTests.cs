using Microsoft.Extensions.Options;

namespace OmniConsistency.Api.Tests;

public sealed class OperationsTests
{
    [Fact]
    public async Task Results_are_deleted_after_the_retention_period()
    {
        await using var host = await ServiceHost.StartAsync(configure: s =>
        {
            s["Omni:Storage:ResultRetention"] = "00:00:01";
            s["Omni:Storage:CleanupInterval"] = "00:00:00.300";
        });
        var job = await host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"));
        await host.Client.WaitForTerminalAsync(job.Id());
        var results = Path.Combine(host.DataDirectory, "blobs", "results");
        Assert.Single(Directory.GetFiles(results));
        var expired = await host.Client.WaitForStatusAsync(job.Id(), j => j.GetProperty("result").GetProperty("expired").GetBoolean(), TimeSpan.FromSeconds(10));
        Assert.Equal("succeeded", expired.Status());
        using var r = await host.Client.GetAsync($"v1/stylizations/{job.Id()}/result");
        await Api.AssertProblemAsync(r, 410, "result-expired");
        Assert.Empty(Directory.GetFiles(results));
        Assert.Empty(Directory.GetFiles(Path.Combine(host.DataDirectory, "blobs", "inputs")));
    }

    [Theory]
    [InlineData("Omni:Queue:Capacity", "0", "Capacity")]
    [InlineData("Omni:Webhooks:Secret", "not-a-secret", "whsec_")]
    [InlineData("Omni:Webhooks:AllowedNetworks:0", "localhost", "CIDR")]
    [InlineData("Omni:Auth:ApiKeys:0:Name", "nokey", "KeySha256")]
    [InlineData("Omni:Limits:MaxImageBytes", "99999999", "MaxImageBytes")]
    public async Task Invalid_configuration_stops_the_start_with_a_clear_message(string key, string value, string expected)
    {
        var ex = await Assert.ThrowsAsync<OptionsValidationException>(() => ServiceHost.StartAsync(configure: s => s[key] = value));
        Assert.Contains(expected, ex.Message);
    }
}
