using System.Globalization;
using System.Net;
using System.Text.Json;
using OmniConsistency.Api.Options;
using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// GET /v1/info reports the limits submissions are really checked against: configured values show, and a submission
/// at each reported bound is accepted while one step beyond is refused with 400.
/// </summary>
public sealed class InfoTests
{
    private static readonly StylizationEngineOptions EngineDefaults = new();

    /// <summary>Non-default Omni:Engine / Omni:Limits / Omni:Queue values (the engine's MaxStyles below Omni:Limits's: the stricter wins).</summary>
    private static void Configured(Dictionary<string, string?> s)
    {
        s["Omni:Engine:MaxSide"] = "520"; // not on the grid: 512 is the largest usable side
        s["Omni:Engine:MaxPixels"] = "200000";
        s["Omni:Engine:DefaultPixels"] = "65536";
        s["Omni:Engine:MaxCondSize"] = "384";
        s["Omni:Engine:DefaultCondSize"] = "256";
        s["Omni:Engine:MaxSteps"] = "12";
        s["Omni:Engine:DefaultSteps"] = "7";
        s["Omni:Engine:MinGuidance"] = "1.25";
        s["Omni:Engine:MaxGuidance"] = "9.5";
        s["Omni:Engine:MaxStyles"] = "2";
        s["Omni:Limits:MaxStyles"] = "3";
        s["Omni:Limits:MaxPromptLength"] = "321";
        s["Omni:Queue:Capacity"] = "37";
    }

    private static async Task<JsonElement> InfoAsync(ServiceHost host)
    {
        using var response = await host.Client.GetAsync("v1/info");
        var body = await response.Json();
        Assert.True(response.StatusCode == HttpStatusCode.OK, body.ToString());
        return body;
    }

    [Fact]
    public async Task Info_reports_the_model_the_configured_limits_and_the_queue()
    {
        await using var host = await ServiceHost.StartAsync(configure: s =>
        {
            Configured(s);
            s["Omni:Worker:Enabled"] = "false"; // jobs stay queued: the depth is known
        });
        var info = await InfoAsync(host);
        Assert.Equal("v1", info.GetProperty("apiVersion").GetString());
        var model = info.GetProperty("model");
        Assert.Equal("ready", model.GetProperty("state").GetString());
        Assert.Equal(host.Engine.Info.ModelName, model.GetProperty("name").GetString());
        Assert.Equal(host.Engine.Info.BuiltIn, model.GetProperty("builtIn").GetBoolean());
        Assert.Equal(host.Engine.Info.Device, model.GetProperty("device").GetString());
        Assert.Equal(host.Engine.Info.DType, model.GetProperty("dType").GetString());
        Assert.Equal(host.Engine.Styles.Count, info.GetProperty("styleCount").GetInt32());

        var limits = info.GetProperty("limits");
        var size = limits.GetProperty("size");
        Assert.Equal(16, size.GetProperty("multiple").GetInt32());
        Assert.Equal(512, size.GetProperty("maxSide").GetInt32());
        Assert.Equal(200000, size.GetProperty("maxPixels").GetInt64());
        Assert.Equal(65536, size.GetProperty("defaultPixels").GetInt64());
        var cond = limits.GetProperty("condSize");
        Assert.Equal((384, 256), (cond.GetProperty("max").GetInt32(), cond.GetProperty("default").GetInt32()));
        var steps = limits.GetProperty("steps");
        Assert.Equal((1, 12, 7), (steps.GetProperty("min").GetInt32(), steps.GetProperty("max").GetInt32(), steps.GetProperty("default").GetInt32()));
        var guidance = limits.GetProperty("guidance");
        Assert.Equal((1.25, 9.5), (guidance.GetProperty("min").GetDouble(), guidance.GetProperty("max").GetDouble()));
        Assert.Equal(new StylizationRequest { Image = [] }.Guidance, guidance.GetProperty("default").GetDouble());
        Assert.Equal(2, limits.GetProperty("styles").GetProperty("maxCount").GetInt32());
        Assert.Equal(321, limits.GetProperty("prompt").GetProperty("maxLength").GetInt32());
        var image = limits.GetProperty("image");
        var settings = ServiceHost.DefaultSettings("");
        Assert.Equal(long.Parse(settings["Omni:Limits:MaxImageBytes"]!, CultureInfo.InvariantCulture), image.GetProperty("maxBytes").GetInt64());
        Assert.Equal(int.Parse(settings["Omni:Limits:MaxImageSide"]!, CultureInfo.InvariantCulture), image.GetProperty("maxSide").GetInt32());
        Assert.Equal(long.Parse(settings["Omni:Limits:MaxImagePixels"]!, CultureInfo.InvariantCulture), image.GetProperty("maxPixels").GetInt64());
        Assert.Equal(new[] { "png", "jpeg", "webp" }, Strings(image.GetProperty("formats")));
        Assert.Equal(new[] { "png", "jpeg", "webp" }, Strings(limits.GetProperty("outputFormats")));
        Assert.Equal(new[] { "stretch", "pad" }, Strings(limits.GetProperty("conditionFits")));
        Assert.Equal(long.Parse(settings["Omni:Limits:MaxRequestBytes"]!, CultureInfo.InvariantCulture), limits.GetProperty("maxRequestBytes").GetInt64());

        var queue = info.GetProperty("queue");
        Assert.Equal(37, queue.GetProperty("capacity").GetInt32());
        Assert.Equal(0, queue.GetProperty("depth").GetInt32());

        // The reported defaults are the ones a job gets when the field is left out.
        var job = await host.Client.SubmitAsync(TestImages.Png());
        await host.Client.SubmitAsync(TestImages.Png());
        var input = job.GetProperty("input");
        Assert.Equal(7, input.GetProperty("steps").GetInt32());
        Assert.Equal(256, input.GetProperty("condSize").GetInt32());
        Assert.Equal(guidance.GetProperty("default").GetDouble(), input.GetProperty("guidance").GetDouble());
        Assert.Equal(2, (await InfoAsync(host)).GetProperty("queue").GetProperty("depth").GetInt32());
    }

    [Fact]
    public async Task Defaults_come_from_the_engine_options_and_the_engines_own_report()
    {
        await using var host = await ServiceHost.StartAsync();
        var limits = (await InfoAsync(host)).GetProperty("limits");
        // The test engine reports a smaller MaxSide than the configured default: the stricter one is the limit.
        Assert.Equal(Math.Min(EngineDefaults.MaxSide, host.Engine.Info.MaxSide), limits.GetProperty("size").GetProperty("maxSide").GetInt32());
        Assert.Equal(EngineDefaults.MaxSteps, limits.GetProperty("steps").GetProperty("max").GetInt32());
        Assert.Equal(EngineDefaults.DefaultSteps, limits.GetProperty("steps").GetProperty("default").GetInt32());
        Assert.Equal(EngineDefaults.MaxGuidance, limits.GetProperty("guidance").GetProperty("max").GetDouble());
        Assert.Equal(EngineDefaults.DefaultCondSize, limits.GetProperty("condSize").GetProperty("default").GetInt32());
        Assert.Equal(new LimitsOptions().MaxStyles, limits.GetProperty("styles").GetProperty("maxCount").GetInt32());
    }

    [Fact]
    public async Task Swagger_describes_info_with_a_typed_schema()
    {
        await using var host = await ServiceHost.StartAsync();
        var doc = await (await host.Client.GetAsync("swagger/v1/swagger.json")).Json();
        var get = doc.GetProperty("paths").GetProperty("/v1/info").GetProperty("get");
        Assert.False(string.IsNullOrWhiteSpace(get.GetProperty("summary").GetString()));
        var schema = get.GetProperty("responses").GetProperty("200").GetProperty("content").GetProperty("application/json").GetProperty("schema");
        Assert.EndsWith("/ServiceInfo", schema.GetProperty("$ref").GetString());
        var properties = doc.GetProperty("components").GetProperty("schemas").GetProperty("SubmissionLimits").GetProperty("properties");
        foreach (var name in new[] { "size", "condSize", "steps", "guidance", "styles", "prompt", "image", "outputFormats", "conditionFits" })
            Assert.True(properties.TryGetProperty(name, out _), name);
    }

    /// <summary>The api role never loads the model: the limits are the configured Omni:Engine ones and the model says why it is absent.</summary>
    [Fact]
    public async Task Api_role_reports_configured_limits_and_no_model()
    {
        await using var schema = await PostgresTestSchema.CreateAsync();
        await using var api = await ServiceHost.StartAsync(configure: s =>
        {
            Configured(s);
            s["Omni:Role"] = "api";
            s["Omni:Storage:Provider"] = "postgres";
            s["Omni:Storage:PostgresConnectionString"] = schema.ConnectionString;
            s["Omni:Engine:LoraFolder"] = StyleFolder(6);
        });
        var info = await InfoAsync(api);
        Assert.Equal("not loaded: api role", info.GetProperty("model").GetProperty("state").GetString());
        Assert.Equal(6, info.GetProperty("styleCount").GetInt32());
        Assert.Equal(512, info.GetProperty("limits").GetProperty("size").GetProperty("maxSide").GetInt32());
        Assert.Equal(12, info.GetProperty("limits").GetProperty("steps").GetProperty("max").GetInt32());
        await AssertBoundsAreTrueAsync(api);
    }

    [Fact]
    public async Task Info_needs_the_api_key_like_the_other_v1_endpoints()
    {
        await using var host = await ServiceHost.StartAsync(configure: s =>
        {
            s["Omni:Auth:ApiKeys:0:Name"] = "app";
            s["Omni:Auth:ApiKeys:0:Key"] = "info-test-key-0123456789";
        });
        await Api.AssertProblemAsync(await host.Client.GetAsync("v1/info"), 401, "unauthorized");
        using var client = host.NewClient("info-test-key-0123456789");
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("v1/info")).StatusCode);
    }

    [Fact]
    public async Task Every_reported_bound_is_accepted_and_one_step_beyond_is_refused_test_engine()
    {
        await using var host = await ServiceHost.StartAsync(configure: s =>
        {
            Configured(s);
            s["Omni:Worker:Enabled"] = "false";
        }, engine: new TestEngine { Styles = ManyStyles(6) });
        await AssertBoundsAreTrueAsync(host);
    }

    /// <summary>The real engine (built-in model): its own Validate agrees with what /v1/info reports.</summary>
    [Fact]
    public async Task Every_reported_bound_is_accepted_and_one_step_beyond_is_refused_built_in_engine()
    {
        await using var host = await ServiceHost.StartAsync(configure: s =>
        {
            Configured(s);
            s["Omni:Worker:Enabled"] = "false";
            s["Omni:Engine:LoraFolder"] = StyleFolder(6);
        }, useBuiltInEngine: true);
        var model = (await InfoAsync(host)).GetProperty("model");
        Assert.True(model.GetProperty("builtIn").GetBoolean(), model.ToString());
        await AssertBoundsAreTrueAsync(host);
    }

    private static string[] Strings(JsonElement array) => array.EnumerateArray().Select(e => e.GetString()!).ToArray();

    /// <summary>A style folder for the built-in engine: names resolve (Validate never loads the files; no job runs).</summary>
    private static string StyleFolder(int n)
    {
        var dir = Path.Combine(ServiceHost.NewDataDirectory(), "styles");
        Directory.CreateDirectory(dir);
        for (var i = 1; i <= n; i++) File.WriteAllBytes(Path.Combine(dir, $"style{i}.safetensors"), [0]);
        return dir;
    }

    private static List<StyleInfo> ManyStyles(int n) =>
        Enumerable.Range(1, n).Select(i => new StyleInfo($"style{i}", $"Style {i}", [], 1.0, null)).ToList();

    private static async Task AssertBoundsAreTrueAsync(ServiceHost host)
    {
        var info = await InfoAsync(host);
        var limits = info.GetProperty("limits");
        var size = limits.GetProperty("size");
        int maxSide = size.GetProperty("maxSide").GetInt32(), minSide = size.GetProperty("minSide").GetInt32(), grid = size.GetProperty("multiple").GetInt32();
        long maxPixels = size.GetProperty("maxPixels").GetInt64();
        var cond = limits.GetProperty("condSize");
        var steps = limits.GetProperty("steps");
        var guidance = limits.GetProperty("guidance");
        var maxStyles = limits.GetProperty("styles").GetProperty("maxCount").GetInt32();
        var styles = (await (await host.Client.GetAsync("v1/styles")).Json()).GetProperty("styles").EnumerateArray()
            .Select(s => s.GetProperty("name").GetString()!).ToList();
        Assert.True(styles.Count > maxStyles, $"the catalog needs more than {maxStyles} styles for this test");
        var other = minSide;
        Assert.True((long)maxSide * other <= maxPixels, "the largest side must fit the pixel limit with the smallest other side");
        static string G(double v) => v.ToString("R", CultureInfo.InvariantCulture);
        static string I(long v) => v.ToString(CultureInfo.InvariantCulture);

        var cases = new (string What, (string, string)[] Ok, (string, string)[] Beyond)[]
        {
            ("width", [("width", I(maxSide)), ("height", I(other))], [("width", I(maxSide + grid)), ("height", I(other))]),
            ("height", [("height", I(maxSide)), ("width", I(other))], [("height", I(maxSide + grid)), ("width", I(other))]),
            ("min side", [("width", I(minSide)), ("height", I(minSide))], [("width", I(minSide - grid)), ("height", I(minSide))]),
            ("grid", [("width", I(maxSide - grid)), ("height", I(other))], [("width", I(maxSide - 1)), ("height", I(other))]),
            ("steps max", [("steps", I(steps.GetProperty("max").GetInt32()))], [("steps", I(steps.GetProperty("max").GetInt32() + 1))]),
            ("steps min", [("steps", I(steps.GetProperty("min").GetInt32()))], [("steps", I(steps.GetProperty("min").GetInt32() - 1))]),
            ("guidance max", [("guidance", G(guidance.GetProperty("max").GetDouble()))], [("guidance", G(Math.BitIncrement(guidance.GetProperty("max").GetDouble())))]),
            ("guidance min", [("guidance", G(guidance.GetProperty("min").GetDouble()))], [("guidance", G(Math.BitDecrement(guidance.GetProperty("min").GetDouble())))]),
            ("condSize", [("condSize", I(cond.GetProperty("max").GetInt32()))], [("condSize", I(cond.GetProperty("max").GetInt32() + cond.GetProperty("multiple").GetInt32()))]),
            ("styles", [("style", string.Join(',', styles.Take(maxStyles)))], [("style", string.Join(',', styles.Take(maxStyles + 1)))]),
        };
        foreach (var (what, ok, beyond) in cases)
        {
            using (var accepted = await host.Client.PostAsync("v1/stylizations", Api.Form(TestImages.Png(), ok)))
                Assert.True(accepted.StatusCode == HttpStatusCode.Accepted, $"{what} at the bound {string.Join(' ', ok)}: {(int)accepted.StatusCode} {await accepted.Content.ReadAsStringAsync()}");
            using var refused = await host.Client.PostAsync("v1/stylizations", Api.Form(TestImages.Png(), beyond));
            Assert.True(refused.StatusCode == HttpStatusCode.BadRequest, $"{what} beyond the bound {string.Join(' ', beyond)}: {(int)refused.StatusCode} {await refused.Content.ReadAsStringAsync()}");
        }
    }
}
