using OmniConsistency.Inference.BuiltIn;
using OmniConsistency.Inference.Imaging;
using OmniConsistency.Inference.Pipelines;
using OmniConsistency.Inference.Tests.Imaging;
using Xunit;

namespace OmniConsistency.Inference.Tests.Pipelines;

/// <summary>The engine end to end on the built-in random-weight model.</summary>
public class StylizationEngineTests(BuiltInEngineFixture fixture) : IClassFixture<BuiltInEngineFixture>
{
    private StylizationEngine Engine => fixture.Engine;
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public void InfoAndStylesDescribeTheBuiltInModel()
    {
        Assert.True(Engine.Info.BuiltIn);
        Assert.Equal(BuiltInModel.DisplayName, Engine.Info.ModelName);
        Assert.Equal("cpu", Engine.Info.Device);
        Assert.Equal("float32", Engine.Info.DType);
        var style = Assert.Single(Engine.Styles);
        Assert.Equal(BuiltInModel.DemoStyleName, style.Name);
        Assert.Equal(["demo style"], style.TriggerWords);
    }

    [Fact]
    public async Task ProducesADecodablePngOfTheRequestedSize()
    {
        var steps = new List<StylizationProgress>();
        var request = BuiltInEngineFixture.SmallRequest() with { Styles = [new StyleSelection(BuiltInModel.DemoStyleName, 0.8)] };
        var result = await Engine.RunAsync(request, new InlineProgress(steps.Add), Ct);
        Assert.Equal("image/png", result.ContentType);
        Assert.Equal((64, 48), (result.Width, result.Height));
        var decoded = new ImageCodec().Decode(result.Image);
        Assert.Equal((64, 48), (decoded.Width, decoded.Height));
        Assert.Equal(request.Seed, result.Seed);
        Assert.Equal("demo style, a red house", result.EffectivePrompt);
        Assert.Equal([1, 2, 3], steps.Where(p => p.Phase == GenerationPhases.Denoising && p.Step > 0).Select(p => p.Step));
        Assert.All(steps, p => Assert.Equal(3, p.TotalSteps));
        Assert.Equal(GenerationPhases.Decoding, steps[^1].Phase);
        Assert.Equal(0, Engine.LastGenerationLiveTensorDelta);

        foreach (var format in new[] { ImageOutputFormat.Jpeg, ImageOutputFormat.Webp })
        {
            var other = await Engine.RunAsync(request with { OutputFormat = format }, null, Ct);
            Assert.Equal(ImageCodec.ContentType(format), other.ContentType);
            Assert.Equal((64, 48), new ImageCodec().Identify(other.Image));
        }
    }

    [Fact]
    public async Task ASeedReproducesTheSameImageAndAnotherSeedDoesNot()
    {
        var first = await Engine.RunAsync(BuiltInEngineFixture.SmallRequest(seed: 11), null, Ct);
        var second = await Engine.RunAsync(BuiltInEngineFixture.SmallRequest(seed: 11), null, Ct);
        var other = await Engine.RunAsync(BuiltInEngineFixture.SmallRequest(seed: 12), null, Ct);
        Assert.Equal(first.Image, second.Image);
        Assert.NotEqual(first.Image, other.Image);
    }

    [Fact]
    public async Task InterleavedRequestsEachGetTheirOwnResult()
    {
        // A uses the demo style (adapters attached to the shared model), B none, other size, fit and guidance.
        var a = BuiltInEngineFixture.SmallRequest(seed: 1) with { Styles = [new StyleSelection(BuiltInModel.DemoStyleName)] };
        var b = BuiltInEngineFixture.SmallRequest(seed: 2) with { Width = 48, Height = 64, ConditionFit = ConditionFit.Pad, Guidance = 2.0 };
        var aloneA = await Engine.RunAsync(a, null, Ct);
        var aloneB = await Engine.RunAsync(b, null, Ct);
        Assert.NotEqual(aloneA.Image, aloneB.Image);

        var tasks = new[] { a, b, a, b }.Select(r => Task.Run(() => Engine.RunAsync(r, null, Ct), Ct)).ToArray();
        var results = await Task.WhenAll(tasks);
        Assert.Equal(aloneA.Image, results[0].Image);
        Assert.Equal(aloneB.Image, results[1].Image);
        Assert.Equal(aloneA.Image, results[2].Image);
        Assert.Equal(aloneB.Image, results[3].Image);

        // Without the style the first request gives another image: the style really acted and was detached after.
        var plainA = await Engine.RunAsync(a with { Styles = [] }, null, Ct);
        Assert.NotEqual(aloneA.Image, plainA.Image);
    }

    [Fact]
    public async Task CancellationMidRunStopsBetweenStepsLeavesNoTensorsAndTheEngineKeepsWorking()
    {
        var request = BuiltInEngineFixture.SmallRequest(seed: 5) with { Steps = 6, Styles = [new StyleSelection(BuiltInModel.DemoStyleName)] };
        var reference = await Engine.RunAsync(request, null, Ct);

        using var cts = new CancellationTokenSource();
        int lastStep = 0;
        var progress = new InlineProgress(p =>
        {
            if (p.Phase != GenerationPhases.Denoising) return;
            lastStep = p.Step;
            if (p.Step == 2) cts.Cancel();
        });
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Engine.RunAsync(request, progress, cts.Token));
        Assert.Equal(2, lastStep);
        Assert.Equal(0, Engine.LastGenerationLiveTensorDelta);

        // The style adapters were detached and the engine serves the same request identically.
        var again = await Engine.RunAsync(request, null, Ct);
        Assert.Equal(reference.Image, again.Image);

        // A token cancelled before the start never reaches the device.
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Engine.RunAsync(request, null, new CancellationToken(canceled: true)));
    }

    [Fact]
    public async Task StretchAndPadDifferForANonSquarePhotoAndAgreeForASquareOne()
    {
        var wide = BuiltInEngineFixture.SmallRequest(seed: 3);
        var stretch = await Engine.RunAsync(wide with { ConditionFit = ConditionFit.Stretch }, null, Ct);
        var pad = await Engine.RunAsync(wide with { ConditionFit = ConditionFit.Pad }, null, Ct);
        Assert.NotEqual(stretch.Image, pad.Image);

        var square = wide with { Image = BuiltInEngineFixture.Photo(64, 64) };
        var squareStretch = await Engine.RunAsync(square with { ConditionFit = ConditionFit.Stretch }, null, Ct);
        var squarePad = await Engine.RunAsync(square with { ConditionFit = ConditionFit.Pad }, null, Ct);
        Assert.Equal(squareStretch.Image, squarePad.Image);
    }

    [Fact]
    public async Task HostileImagesAreTypedRequestErrors()
    {
        var request = BuiltInEngineFixture.SmallRequest();
        // Validate reads the header only: a truncated body is found when the run decodes it.
        var cases = new (byte[] Image, string ErrorType, bool HeaderShowsIt)[]
        {
            ([], "invalid-image", true),
            ("not an image at all"u8.ToArray(), "invalid-image", true),
            (PngBuilder.Rgb(1, 100_000, 1), "image-too-large", true),
            (PngBuilder.Rgb(9_000, 9_000, 1), "image-too-large", true),
            (BuiltInEngineFixture.Photo()[..200], "invalid-image", false),
        };
        foreach (var (image, errorType, headerShowsIt) in cases)
        {
            var bad = request with { Image = image };
            if (headerShowsIt)
            {
                var e = Assert.ThrowsAny<StylizationRequestException>(() => Engine.Validate(bad));
                Assert.Equal(errorType, e.ErrorType);
            }
            var run = await Assert.ThrowsAnyAsync<StylizationRequestException>(() => Engine.RunAsync(bad, null, Ct));
            Assert.Equal(errorType, run.ErrorType);
        }
        // Still serving.
        Assert.Equal((64, 48), new ImageCodec().Identify((await Engine.RunAsync(request, null, Ct)).Image));
    }

    [Fact]
    public void InvalidRequestsAreRejectedWithStableErrorTypes()
    {
        var ok = BuiltInEngineFixture.SmallRequest();
        Engine.Validate(ok);
        var cases = new (StylizationRequest Request, string ErrorType)[]
        {
            (ok with { Width = 70 }, "invalid-size"),
            (ok with { Height = 0 }, "invalid-size"),
            (ok with { Width = 4096 }, "invalid-size"),
            (ok with { Width = 2048, Height = 2048 + 16 }, "invalid-size"),
            (ok with { Steps = 0 }, "invalid-steps"),
            (ok with { Steps = 1000 }, "invalid-steps"),
            (ok with { Guidance = double.NaN }, "invalid-guidance"),
            (ok with { Guidance = 100 }, "invalid-guidance"),
            (ok with { CondSize = 40 }, "invalid-cond-size"),
            (ok with { CondSize = 2048 }, "invalid-cond-size"),
            (ok with { Styles = [new StyleSelection("no-such-style")] }, "unknown-style"),
            (ok with { Styles = [new StyleSelection("../../etc/passwd")] }, "invalid-style-name"),
            (ok with { Styles = [new StyleSelection(BuiltInModel.DemoStyleName, double.PositiveInfinity)] }, "invalid-style-weight"),
            (ok with { Styles = Enumerable.Repeat(new StyleSelection(BuiltInModel.DemoStyleName), 5).ToList() }, "too-many-styles"),
            (ok with { Prompt = new string('a', 5000) }, "invalid-prompt"),
            (ok with { ConditionFit = (ConditionFit)7 }, "invalid-option"),
            (ok with { OutputFormat = (ImageOutputFormat)9 }, "invalid-option"),
        };
        foreach (var (request, errorType) in cases)
        {
            var e = Assert.ThrowsAny<StylizationRequestException>(() => Engine.Validate(request));
            Assert.True(errorType == e.ErrorType, $"expected {errorType}, got {e.ErrorType}: {e.Message}");
        }
    }

    [Fact]
    public async Task LongPromptsAreTruncatedWithAWarning()
    {
        var prompt = string.Join(" ", Enumerable.Range(0, 120).Select(i => $"word{i}"));
        var result = await Engine.RunAsync(BuiltInEngineFixture.SmallRequest() with { Prompt = prompt, Steps = 1 }, null, Ct);
        var warning = Assert.Single(result.Warnings);
        Assert.Contains("CLIP", warning);
        Assert.Contains("word119", warning);
    }

    [Fact]
    public void AnUncontendedRunComputesOnTheCallingThread()
    {
        int caller = 0, computing = 0;
        var thread = new Thread(() =>
        {
            caller = Environment.CurrentManagedThreadId;
            var progress = new InlineProgress(_ => computing = Environment.CurrentManagedThreadId);
            Engine.RunAsync(BuiltInEngineFixture.SmallRequest() with { Steps = 1 }, progress, Ct).GetAwaiter().GetResult();
        });
        thread.Start();
        thread.Join();
        Assert.NotEqual(0, caller);
        Assert.Equal(caller, computing);
    }

    [Fact]
    public async Task AnEmptyPromptAndAStyleWithoutWeightWork()
    {
        var result = await Engine.RunAsync(BuiltInEngineFixture.SmallRequest() with
        {
            Prompt = null, Steps = 1, Styles = [new StyleSelection(BuiltInModel.DemoStyleName, 0)],
        }, null, Ct);
        Assert.Equal("", result.EffectivePrompt);
        Assert.Empty(result.Warnings);
    }

    [Fact]
    public void DefaultOutputSizeFollowsThePhotoAspectAtAboutOneMegapixel()
    {
        var planner = new StylizationPlanner(Engine.Options, new ImageCodec(), null);
        var plan = planner.Plan(BuiltInEngineFixture.SmallRequest() with { Width = null, Height = null });
        var (w, h) = planner.OutputSizeFor(plan, 4000, 3000);
        Assert.Equal((1184, 880), (w, h));
        Assert.Equal(0, w % 16);
        Assert.InRange((long)w * h, 950_000, 1_100_000);
        // One side given: the other follows the aspect.
        Assert.Equal((640, 480), planner.OutputSizeFor(plan with { Width = 640 }, 4000, 3000));
        Assert.Equal((640, 480), planner.OutputSizeFor(plan with { Height = 480 }, 4000, 3000));
        // Very wide photos are capped by MaxSide.
        var (ww, wh) = planner.OutputSizeFor(plan, 10_000, 100);
        Assert.Equal(2048, ww);
        Assert.Equal(16, wh);
    }
}
