using System.Diagnostics;
using OmniConsistency.Inference.BuiltIn;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Pipelines;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Pipelines;

public class BuiltInModelTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public void CreationIsDeterministicIdempotentAndRepairsDamage()
    {
        var dirA = Directory.CreateTempSubdirectory("builtin-a-").FullName;
        var dirB = Directory.CreateTempSubdirectory("builtin-b-").FullName;
        try
        {
            var sw = Stopwatch.StartNew();
            var a = BuiltInModel.EnsureCreated(dirA);
            var elapsed = sw.Elapsed;
            TestContext.Current.TestOutputHelper?.WriteLine($"built-in model created in {elapsed.TotalMilliseconds:F0} ms");
            var b = BuiltInModel.EnsureCreated(dirB);
            var filesA = Files(a.Root);
            Assert.Equal(filesA, Files(b.Root));
            foreach (var f in filesA)
                Assert.True(File.ReadAllBytes(Path.Combine(a.Root, f)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(b.Root, f))), $"{f} differs between two creations");
            Assert.Contains("transformer/diffusion_pytorch_model.safetensors", filesA);
            Assert.Contains("styles/demo-style.json", filesA);
            Assert.Contains("styles/" + BuiltInModel.DemoStylePreviewFileName, filesA); // byte-identical across creations, like the weights
            Assert.True(File.Exists(a.ConsistencyLoraFile));

            // A second call keeps the valid folder as it is.
            var marker = Path.Combine(a.Root, BuiltInModel.MarkerFileName);
            var written = File.GetLastWriteTimeUtc(marker);
            Thread.Sleep(20);
            Assert.Equal(a, BuiltInModel.EnsureCreated(dirA));
            Assert.Equal(written, File.GetLastWriteTimeUtc(marker));

            // A damaged weight file makes it invalid, and the next call rebuilds the same content.
            var vae = Path.Combine(a.Root, "vae", "diffusion_pytorch_model.safetensors");
            var good = File.ReadAllBytes(vae);
            File.WriteAllBytes(vae, good[..(good.Length / 2)]);
            Assert.False(BuiltInModel.IsValid(a.Root));
            BuiltInModel.EnsureCreated(dirA);
            Assert.True(BuiltInModel.IsValid(a.Root));
            Assert.Equal(good, File.ReadAllBytes(vae));
            Assert.DoesNotContain(Directory.GetDirectories(dirA), d => Path.GetFileName(d).StartsWith('.'));
        }
        finally
        {
            Directory.Delete(dirA, true);
            Directory.Delete(dirB, true);
        }
    }

    [Fact]
    public void BuiltInModelLoadsWithItsDemoStyleAndRunsTextToImage()
    {
        var dir = Directory.CreateTempSubdirectory("builtin-load-").FullName;
        try
        {
            var paths = BuiltInModel.EnsureCreated(dir);
            using var models = FluxModelSet.Load(paths.ModelSetOptions("cpu"));
            Assert.Equal(BuiltInModel.DisplayName, models.Name);
            Assert.NotNull(models.ConsistencyLora);
            Assert.Equal(BuiltInModel.ConsistencyLoraRank, models.ConsistencyLora!.Rank);

            var catalog = new StyleCatalog(new StyleCatalogOptions { Folder = paths.StylesFolder });
            var style = Assert.Single(catalog.Entries);
            Assert.Equal(BuiltInModel.DemoStyleName, style.Name);
            Assert.Equal(["demo style"], style.TriggerWords);
            Assert.Empty(catalog.Problems);
            var preview = StylePreviewFile.Read(style.PreviewPath!);
            Assert.Equal("image/png", preview.ContentType);
            Assert.True(preview.Width >= 128 && preview.Width == preview.Height, $"{preview.Width}x{preview.Height}");
            using var adapter = LoraLoader.Load(style.LoraPath, models.LoraTargets, models.DType, models.Device);
            Assert.Contains(LoraFormat.Diffusers, adapter.Formats);
            Assert.Equal(8 * models.Transformer.Config.NumLayers + 3 * models.Transformer.Config.NumSingleLayers, adapter.Modules.Count);

            using var noise = GenerationNoise.FromSeed(3);
            var sw = Stopwatch.StartNew();
            using var output = new FluxTextToImagePipeline(models).Run(new FluxGenerationInputs { Prompt = "a house", Height = 48, Width = 80, Steps = 2 }, noise, cancellationToken: Ct);
            TestContext.Current.TestOutputHelper?.WriteLine($"80x48, 2 steps: {sw.ElapsedMilliseconds} ms");
            Assert.Equal([1, 3, 48, 80], output.Image.shape);
            Assert.True(output.Image.isfinite().all().item<bool>());
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static List<string> Files(string root) =>
        Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories).Select(p => Path.GetRelativePath(root, p)).Order(StringComparer.Ordinal).ToList();
}

public class DemoStylePreviewTests
{
    /// <summary>The preview pictures the demo LoRA's update B·A of the first double block's q/k/v as r/g/b: checked against a TorchSharp matmul.</summary>
    [Fact]
    public void PreviewPixelsAreTheDemoStylesQkvUpdates()
    {
        var dir = Directory.CreateTempSubdirectory("builtin-preview-").FullName;
        try
        {
            var paths = BuiltInModel.EnsureCreated(dir);
            var lora = Path.Combine(paths.StylesFolder, BuiltInModel.DemoStyleName + ".safetensors");
            using var image = SixLabors.ImageSharp.Image.Load<SixLabors.ImageSharp.PixelFormats.Rgb24>(
                Path.Combine(paths.StylesFolder, BuiltInModel.DemoStylePreviewFileName));
            using var file = OmniConsistency.Inference.IO.SafetensorsFile.Open(lora);
            string[] modules = ["to_q", "to_k", "to_v"];
            for (int channel = 0; channel < 3; channel++)
            {
                using var scope = NewDisposeScope();
                var prefix = "transformer.transformer_blocks.0.attn." + modules[channel];
                var delta = file.Load(prefix + ".lora_B.weight", ScalarType.Float64).matmul(file.Load(prefix + ".lora_A.weight", ScalarType.Float64));
                var expected = (delta / delta.abs().max() * 127.5 + 127.5).round().clamp(0, 255).to(ScalarType.Int32);
                long rows = delta.shape[0], cols = delta.shape[1];
                var scale = image.Width / (int)cols;
                Assert.Equal((cols * scale, rows * scale), ((long)image.Width, (long)image.Height));
                var values = expected.data<int>().ToArray();
                for (int y = 0; y < image.Height; y++)
                for (int x = 0; x < image.Width; x++)
                {
                    var p = image[x, y];
                    var actual = channel switch { 0 => p.R, 1 => p.G, _ => p.B };
                    Assert.InRange(actual - values[(y / scale) * cols + x / scale], -1, 1); // ties may round either way
                }
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
