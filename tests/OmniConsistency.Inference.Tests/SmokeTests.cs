using TorchSharp;
using Xunit;

namespace OmniConsistency.Inference.Tests;

public class SmokeTests
{
    [Fact]
    public void TorchLoadsAndComputes()
    {
        using var scope = torch.NewDisposeScope();
        var a = torch.ones(2, 3);
        Assert.Equal(6.0f, a.sum().item<float>());
    }
}
