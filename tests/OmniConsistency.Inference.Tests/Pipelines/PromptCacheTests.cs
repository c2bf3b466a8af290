using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Pipelines;
using OmniConsistency.Inference.Tests.Golden;
using OmniConsistency.Inference.Tests.Lora;
using OmniConsistency.Inference.TextEncoders;
using TorchSharp;
using Xunit;
using static OmniConsistency.Inference.Tests.TensorAssert;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Pipelines;

/// <summary>The prompt-embedding cache and the text-encoder device option, on the golden tiny FLUX model.</summary>
public class PromptCacheTests
{
    private static string TinyFlux => Path.Combine(GoldenRoot.Path, "models", "tiny-flux");
    private static string TinyLora => Path.Combine(GoldenRoot.Path, "loras", "omniconsistency-tiny.safetensors");
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static FluxModelSet TinyModels(string? dtype = null, string textEncoderDevice = "auto") =>
        FluxModelSet.Load(new FluxModelSetOptions
        {
            ModelFolder = TinyFlux, ConsistencyLoraFile = TinyLora, Device = "cpu", DType = dtype, TextEncoderDevice = textEncoderDevice,
        });

    private static PromptEmbeddingLease Acquire(PromptEmbeddingCache cache, FluxModelSet models, string prompt, string? state = null) =>
        cache.Acquire(models.PromptEncoder, prompt, null, 512, models.DType, models.Device, state, Ct);

    private static long EntryBytes(FluxModelSet models)
    {
        using var probe = new PromptEmbeddingCache(0);
        using var lease = Acquire(probe, models, "probe");
        var p = lease.Prompt;
        return new[] { p.PromptEmbeds, p.PooledPromptEmbeds, p.TextIds }.Sum(t => t.numel() * t.ElementSize);
    }

    [Fact]
    public void GenerationsAreBitIdenticalWithTheCacheOnAndOff()
    {
        using var models = TinyModels();
        using var cache = new PromptEmbeddingCache(64L << 20);
        using var scope = NewDisposeScope();
        var request = BuiltInEngineFixture.SmallRequest();
        var condition = Inference.Imaging.ImageTensors.ToTensor(Inference.Imaging.ConditionImage.Fit(new Inference.Imaging.ImageCodec().Decode(request.Image), 32, ConditionFit.Stretch), models.Device);
        var inputs = new OmniConsistencyInputs { Prompt = "a red house", Width = 64, Height = 48, Steps = 2, ConditionImage = condition };
        Tensor Run(PromptEmbeddingCache? c)
        {
            using var noise = GenerationNoise.FromSeed(5);
            using var output = new OmniConsistencyPipeline(models, c).Run(inputs, noise, cancellationToken: Ct);
            return output.Image.clone();
        }
        var uncached = Run(null);
        var miss = Run(cache);
        var hit = Run(cache);
        Assert.Equal((1L, 1L), (cache.Metrics.Hits, cache.Metrics.Misses));
        Assert.True(TensorsEqual(uncached, miss));
        Assert.True(TensorsEqual(uncached, hit));

        // Plain text-to-image shares the stage (and the entry: same prompt, encoders and output dtype).
        using var noise = GenerationNoise.FromSeed(5);
        using var t2iCached = new FluxTextToImagePipeline(models, cache).Run(inputs, noise, cancellationToken: Ct);
        using var noise2 = GenerationNoise.FromSeed(5);
        using var t2i = new FluxTextToImagePipeline(models).Run(inputs, noise2, cancellationToken: Ct);
        Assert.Equal(2, cache.Metrics.Hits);
        Assert.True(TensorsEqual(t2i.Image, t2iCached.Image));
    }

    [Fact]
    public void ACaptureHookThatThrowsDoesNotLeaveTheEntryReferenced()
    {
        using var models = TinyModels();
        var cache = new PromptEmbeddingCache(64L << 20);
        using var scope = NewDisposeScope();
        var request = BuiltInEngineFixture.SmallRequest();
        var condition = Inference.Imaging.ImageTensors.ToTensor(Inference.Imaging.ConditionImage.Fit(new Inference.Imaging.ImageCodec().Decode(request.Image), 32, ConditionFit.Stretch), models.Device);
        var inputs = new OmniConsistencyInputs { Prompt = "a red house", Width = 64, Height = 48, Steps = 1, ConditionImage = condition };
        Tensor? seen = null;
        void Capture(string name, Tensor t)
        {
            if (name != "prompt_embeds") return;
            seen = t;
            throw new InvalidOperationException("capture failed");
        }
        using var noise = GenerationNoise.FromSeed(5);
        Assert.Throws<InvalidOperationException>(() => new FluxTextToImagePipeline(models, cache).Run(inputs, noise, capture: Capture, cancellationToken: Ct));
        // The failed generation's lease was released: disposing the cache frees the entry.
        cache.Dispose();
        Assert.True(seen!.IsInvalid, "the cached prompt embeddings are still referenced by a lost lease");
    }

    [Fact]
    public async Task TheEngineCountsHitsAndAGenerationLeaksNothingButTheCachedEntry()
    {
        var data = Directory.CreateTempSubdirectory("prompt-cache-engine-").FullName;
        try
        {
            using var engine = StylizationEngine.Create(new StylizationEngineOptions { DataDirectory = data, Device = "cpu" });
            var request = BuiltInEngineFixture.SmallRequest() with { Prompt = "a prompt only this test uses", Steps = 1 };
            // Run on a dedicated thread so that the per-thread counts below are this generation's only.
            var (first, rawFirst, retainedFirst) = await RunCounting(engine, request);
            Assert.Equal(0, engine.LastGenerationLiveTensorDelta);
            // The miss left exactly the cached entry's 3 tensors alive on the thread, and accounted for them.
            Assert.Equal(3, rawFirst);
            Assert.Equal(3, retainedFirst);
            var (second, rawSecond, retainedSecond) = await RunCounting(engine, request);
            Assert.Equal((0L, 0L, 0L), (engine.LastGenerationLiveTensorDelta, rawSecond, retainedSecond));
            Assert.Equal(first.Image, second.Image);
            var m = engine.PromptCacheMetrics;
            Assert.Equal((1L, 1L, 1), (m.Hits, m.Misses, m.Entries));
            Assert.True(m.Bytes > 0 && m.Bytes <= m.BudgetBytes);
        }
        finally
        {
            Directory.Delete(data, true);
        }
    }

    private static Task<(StylizationResult Result, long RawLive, long Retained)> RunCounting(StylizationEngine engine, StylizationRequest request)
    {
        var done = new TaskCompletionSource<(StylizationResult, long, long)>();
        var thread = new Thread(() =>
        {
            try
            {
                long live = DisposeScopeManager.Statistics.ThreadTotalLiveCount, retained = PromptEmbeddingCache.ThreadRetainedTensorCount;
                var result = engine.RunAsync(request, null, CancellationToken.None).GetAwaiter().GetResult();
                done.SetResult((result, DisposeScopeManager.Statistics.ThreadTotalLiveCount - live, PromptEmbeddingCache.ThreadRetainedTensorCount - retained));
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        });
        thread.Start();
        return done.Task;
    }

    [Fact]
    public void TheLeastRecentlyUsedEntryIsEvictedAndItsTensorsFreed()
    {
        using var models = TinyModels();
        long bytes = EntryBytes(models);
        using var cache = new PromptEmbeddingCache(2 * bytes + bytes / 2);
        long threadLive = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Tensor Keep(string prompt)
        {
            using var lease = Acquire(cache, models, prompt);
            return lease.Prompt.PromptEmbeds;
        }
        var a = Keep("prompt a");
        var b = Keep("prompt b");
        Thread.Sleep(5);
        using (var touch = Acquire(cache, models, "prompt a")) Assert.True(touch.Hit);
        Thread.Sleep(5);
        var c = Keep("prompt c");
        var m = cache.Metrics;
        Assert.Equal((1L, 2, 2 * bytes), (m.Evictions, m.Entries, m.Bytes));
        Assert.True(b.IsInvalid, "the evicted entry's tensors are freed at once");
        Assert.False(a.IsInvalid || c.IsInvalid);
        // Two entries of 3 tensors stay; nothing else.
        Assert.Equal(6, DisposeScopeManager.Statistics.ThreadTotalLiveCount - threadLive);
        cache.Dispose();
        Assert.True(a.IsInvalid && c.IsInvalid);
        Assert.Equal(0, DisposeScopeManager.Statistics.ThreadTotalLiveCount - threadLive);
    }

    [Fact]
    public void AnEvictedEntryAGenerationStillUsesLivesUntilItsLeaseEnds()
    {
        using var models = TinyModels();
        long bytes = EntryBytes(models);
        using var cache = new PromptEmbeddingCache(bytes);
        var held = Acquire(cache, models, "in use");
        using (Acquire(cache, models, "another")) { }
        Assert.Equal(1, cache.Metrics.Evictions);
        Assert.False(held.Prompt.PromptEmbeds.IsInvalid);
        Assert.Equal(1, held.Prompt.PromptEmbeds.isfinite().all().item<bool>() ? 1 : 0);
        held.Dispose();
        Assert.True(held.Prompt.PromptEmbeds.IsInvalid);

        // Larger than the whole budget: handed out uncached, freed with its lease.
        using var tiny = new PromptEmbeddingCache(16);
        var lease = Acquire(tiny, models, "too big");
        Assert.Equal((1L, 0), (tiny.Metrics.Uncached, tiny.Metrics.Entries));
        lease.Dispose();
        Assert.True(lease.Prompt.PromptEmbeds.IsInvalid);
    }

    [Fact]
    public async Task ConcurrentRequestsForOnePromptShareOneEncode()
    {
        using var models = TinyModels();
        using var cache = new PromptEmbeddingCache(64L << 20);
        var key = PromptEmbeddingCache.KeyFor(models.PromptEncoder, "shared", null, 512, 1, models.DType, models.Device);
        int encodes = 0;
        using var release = new ManualResetEventSlim();
        EncodedPrompt Encode()
        {
            Interlocked.Increment(ref encodes);
            release.Wait(Ct);
            return PromptEmbeddingCache.EncodeFor(models.PromptEncoder, key, models.DType, models.Device);
        }
        var tasks = Enumerable.Range(0, 4).Select(_ => Task.Run(() => cache.Acquire(key, Encode, Ct), Ct)).ToList();
        while (cache.Metrics.Misses == 0) await Task.Delay(5, Ct);
        await Task.Delay(100, Ct);
        release.Set();
        var leases = await Task.WhenAll(tasks);
        Assert.Equal(1, encodes);
        Assert.All(leases, l => Assert.Same(leases[0].Prompt, l.Prompt));
        var m = cache.Metrics;
        Assert.Equal(4, m.Hits + m.Misses);
        Assert.Equal(m.Misses - 1, m.SharedEncodes);
        foreach (var l in leases) l.Dispose();
        Assert.False(leases[0].Prompt.PromptEmbeds.IsInvalid);
    }

    [Fact]
    public void KeysSeparateEverythingTheEmbeddingsDependOn()
    {
        using var models = TinyModels();
        var e = models.PromptEncoder;
        var k = PromptEmbeddingCache.KeyFor(e, "p", null, 512, 1, ScalarType.Float32, CPU);
        Assert.Equal(k, PromptEmbeddingCache.KeyFor(e, "p", "", 512, 1, ScalarType.Float32, CPU));
        Assert.Equal(k, PromptEmbeddingCache.KeyFor(e, "p", "p", 512, 1, ScalarType.Float32, CPU));
        Assert.NotEqual(k, PromptEmbeddingCache.KeyFor(e, "p", "q", 512, 1, ScalarType.Float32, CPU));
        Assert.NotEqual(k, PromptEmbeddingCache.KeyFor(e, "p ", null, 512, 1, ScalarType.Float32, CPU));
        Assert.NotEqual(k, PromptEmbeddingCache.KeyFor(e, "p", null, 256, 1, ScalarType.Float32, CPU));
        Assert.NotEqual(k, PromptEmbeddingCache.KeyFor(e, "p", null, 512, 1, ScalarType.BFloat16, CPU));
        Assert.NotEqual(k, PromptEmbeddingCache.KeyFor(e, "p", null, 512, 1, ScalarType.Float32, CPU, "RunTime: 7x1"));
        using var other = TinyModels();
        Assert.NotEqual(k, PromptEmbeddingCache.KeyFor(other.PromptEncoder, "p", null, 512, 1, ScalarType.Float32, CPU));
    }

    [Fact]
    public void AStyleLoraOnClipGetsItsOwnEntryAndTheSameImageAsUncached()
    {
        using var models = TinyModels();
        Assert.NotNull(models.ClipTargets);
        using var dir = new TempFolder();
        var (name, clipQ) = models.ClipTargets!.Modules.First(m => m.Key.EndsWith("q_proj", StringComparison.Ordinal));
        var kohya = "lora_te1_" + name.Replace('.', '_');
        var g = new Generator(3);
        var path = dir.File("te.safetensors");
        using (var scope = NewDisposeScope())
            SafetensorsWriter.Save(path, new Dictionary<string, Tensor>
            {
                [kohya + ".lora_down.weight"] = randn([2, clipQ.InFeatures], generator: g),
                [kohya + ".lora_up.weight"] = randn([clipQ.OutFeatures, 2], generator: g),
                [kohya + ".alpha"] = tensor(2.0f),
            });
        using var adapter = LoraLoader.Load(path, models.LoraTargets, models.DType, models.Device);
        Assert.Contains(adapter.Modules, m => m.Component == LoraComponent.TextEncoder);

        using var cache = new PromptEmbeddingCache(64L << 20);
        var options = new StylizationEngineOptions();
        var cached = new StylizationPipeline(models, options, catalog: null, cache: null, promptCache: cache);
        var uncached = new StylizationPipeline(models, options, catalog: null, cache: null);
        var request = BuiltInEngineFixture.SmallRequest() with { Steps = 1 };
        var plan = cached.Plan(request);
        IReadOnlyList<(LoraAdapter, double)> style = [(adapter, 1.0)];
        var plain = cached.Generate(plan, request.Image, [], null, Ct);
        var styled = cached.Generate(plan, request.Image, style, null, Ct);
        Assert.Equal((0L, 2L, 2), (cache.Metrics.Hits, cache.Metrics.Misses, cache.Metrics.Entries));
        Assert.NotEqual(plain.Image, styled.Image);
        Assert.Equal(styled.Image, uncached.Generate(plan, request.Image, style, null, Ct).Image);
        Assert.Equal(plain.Image, uncached.Generate(plan, request.Image, [], null, Ct).Image);
        Assert.Equal(styled.Image, cached.Generate(plan, request.Image, style, null, Ct).Image);
        Assert.Equal(1, cache.Metrics.Hits);
        Assert.Equal(0, cached.LastGenerationLiveTensorDelta);
    }

    [Fact]
    public void TextEncodersOnTheCpuInFloat32FeedABf16Transformer()
    {
        using var split = TinyModels(dtype: "bfloat16", textEncoderDevice: "cpu");
        Assert.Equal((ScalarType.Float32, ScalarType.Float32, ScalarType.BFloat16), (split.PromptEncoder.ClipDType, split.PromptEncoder.T5DType, split.DType));
        Assert.Null(split.ClipTargets); // CLIP LoRA keys need CLIP in the model's dtype
        using var sameDevice = TinyModels(dtype: "bfloat16");
        Assert.Equal(ScalarType.BFloat16, sameDevice.PromptEncoder.T5DType);
        using var fp32 = TinyModels();

        using var cache = new PromptEmbeddingCache(64L << 20);
        using var lease = Acquire(cache, split, "a lighthouse");
        using var reference = fp32.PromptEncoder.Encode("a lighthouse");
        Assert.Equal(ScalarType.BFloat16, lease.Prompt.PromptEmbeds.dtype);
        Assert.Equal(ScalarType.BFloat16, lease.Prompt.PooledPromptEmbeds.dtype);
        using var scope = NewDisposeScope();
        Assert.True(TensorsEqual(reference.PromptEmbeds.to(ScalarType.BFloat16), lease.Prompt.PromptEmbeds));
        Assert.True(TensorsEqual(reference.PooledPromptEmbeds.to(ScalarType.BFloat16), lease.Prompt.PooledPromptEmbeds));

        using var noise = GenerationNoise.FromSeed(1);
        using var output = new FluxTextToImagePipeline(split, cache).Run(
            new FluxGenerationInputs { Prompt = "a lighthouse", Width = 32, Height = 32, Steps = 1 }, noise, cancellationToken: Ct);
        Assert.True(output.Image.isfinite().all().item<bool>());
        Assert.Equal(1, cache.Metrics.Hits);
    }

    [Fact]
    public void OptionsBindAndAreChecked()
    {
        var options = StylizationEngineOptions.FromConfiguration(new Dictionary<string, string?>
        {
            ["TextEncoderDevice"] = "cpu",
            ["TextEncoderDType"] = "bfloat16",
            ["PromptCacheBytes"] = "0",
        });
        Assert.Equal(("cpu", "bfloat16", 0L), (options.TextEncoderDevice, options.TextEncoderDType, options.PromptCacheBytes));
        options.Validate();
        Assert.Equal(64L << 20, new StylizationEngineOptions().PromptCacheBytes);
        Assert.Equal("auto", new StylizationEngineOptions().TextEncoderDevice);
        var e = Assert.Throws<ArgumentException>(() => new StylizationEngineOptions { TextEncoderDevice = "gpu0", PromptCacheBytes = -1, TextEncoderDType = "int8" }.Validate());
        Assert.Contains("TextEncoderDevice", e.Message);
        Assert.Contains("PromptCacheBytes", e.Message);
        Assert.Contains("int8", e.Message);
    }
}
