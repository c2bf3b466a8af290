using OmniConsistency.Inference.Imaging;
using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Inference.Tests.Pipelines;

/// <summary>One engine on the built-in model (created in a temporary data directory), shared by a test class.</summary>
public sealed class BuiltInEngineFixture : IDisposable
{
    public BuiltInEngineFixture()
    {
        DataDirectory = Directory.CreateTempSubdirectory("engine-tests-").FullName;
        Engine = StylizationEngine.Create(new StylizationEngineOptions { DataDirectory = DataDirectory, Device = "cpu" });
    }

    public string DataDirectory { get; }
    public StylizationEngine Engine { get; }

    /// <summary>A <paramref name="width"/>×<paramref name="height"/> PNG with a colour gradient and a bright square (structure to keep).</summary>
    public static byte[] Photo(int width = 96, int height = 64)
    {
        var image = new RgbImage(width, height);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                int o = (y * width + x) * 3;
                bool square = x > width / 3 && x < width / 2 && y > height / 4 && y < height / 2;
                image.Pixels[o] = square ? (byte)250 : (byte)(255 * x / width);
                image.Pixels[o + 1] = square ? (byte)240 : (byte)(255 * y / height);
                image.Pixels[o + 2] = (byte)((x * 7 + y * 3) % 256);
            }
        return new ImageCodec().Encode(image, ImageOutputFormat.Png);
    }

    /// <summary>A small request that runs in well under a second on the built-in model.</summary>
    public static StylizationRequest SmallRequest(long seed = 7) => new()
    {
        Image = Photo(),
        Prompt = "a red house",
        Width = 64,
        Height = 48,
        Steps = 3,
        CondSize = 32,
        Seed = seed,
    };

    public void Dispose()
    {
        Engine.Dispose();
        try
        {
            Directory.Delete(DataDirectory, recursive: true);
        }
        catch (IOException)
        {
            // A temp folder left behind is harmless.
        }
    }
}

/// <summary>IProgress that reports on the calling thread (Progress&lt;T&gt; posts to the thread pool).</summary>
public sealed class InlineProgress(Action<StylizationProgress> report) : IProgress<StylizationProgress>
{
    public void Report(StylizationProgress value) => report(value);
}
