using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using OmniConsistency.Inference.Lora;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// GET /v1/styles/{name}/preview and the styles' previewUrl, over HTTP: the styles come from a real
/// <see cref="StyleCatalog"/> over a temporary style folder (as the engine gets them), served by a <see cref="TestEngine"/>.
/// </summary>
public sealed class StylePreviewTests : IAsyncLifetime
{
    private readonly string _styles = Directory.CreateTempSubdirectory("omni-previews-").FullName;
    private readonly string _outside = Directory.CreateTempSubdirectory("omni-outside-").FullName;
    private ServiceHost _host = null!;
    private byte[] _png = null!, _jpegNamedPng = null!, _webp = null!;

    public async ValueTask InitializeAsync()
    {
        _png = TestImages.Png(40, 30, seed: 1);
        _jpegNamedPng = Encode(32, 24, (i, s) => i.SaveAsJpeg(s));
        _webp = Encode(20, 20, (i, s) => i.SaveAsWebp(s));
        AddStyle(_styles, "ghibli", "ghibli.png", _png);
        AddStyle(_styles, "photo", "photo.png", _jpegNamedPng);     // JPEG content behind a .png name
        AddStyle(_styles, "web", "web.webp", _webp);
        AddStyle(_styles, "plain", null, null);
        AddStyle(_styles, "escape", "../secret.png", null);         // refused by the catalog: no previewUrl
        File.WriteAllBytes(Path.Combine(_outside, "secret.png"), TestImages.Png(8, 8, seed: 9));
        File.CreateSymbolicLink(Path.Combine(_styles, "linked-out.png"), Path.Combine(_outside, "secret.png"));
        AddStyle(_styles, "linked", "linked-out.png", null);        // a link out of the folder: refused too
        var catalog = new StyleCatalog(new StyleCatalogOptions { Folder = _styles });
        Assert.Equal(2, catalog.Problems.Count); // escape.json and linked.json
        _host = await ServiceHost.StartAsync(engine: new TestEngine { Styles = catalog.Styles });
    }

    public async ValueTask DisposeAsync()
    {
        await _host.DisposeAsync();
        Directory.Delete(_styles, true);
        Directory.Delete(_outside, true);
    }

    private static byte[] Encode(int w, int h, Action<Image<Rgb24>, Stream> save)
    {
        using var image = new Image<Rgb24>(w, h);
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            image[x, y] = new Rgb24((byte)(x * 8), (byte)(y * 8), 99);
        using var stream = new MemoryStream();
        save(image, stream);
        return stream.ToArray();
    }

    /// <summary>A style LoRA (content irrelevant to the API) with a sidecar naming <paramref name="preview"/>, written when bytes are given.</summary>
    internal static void AddStyle(string folder, string name, string? preview, byte[]? bytes)
    {
        File.WriteAllBytes(Path.Combine(folder, name + ".safetensors"), [0]);
        var sidecar = new Dictionary<string, object> { ["display_name"] = name.ToUpperInvariant() };
        if (preview is not null) sidecar["preview"] = preview;
        File.WriteAllText(Path.Combine(folder, name + ".json"), JsonSerializer.Serialize(sidecar));
        if (preview is not null && bytes is not null) File.WriteAllBytes(Path.Combine(folder, preview), bytes);
    }

    private string PreviewUrl(string style) => new Uri(_host.BaseAddress, $"v1/styles/{style}/preview").AbsoluteUri;

    [Fact]
    public async Task Styles_carry_an_absolute_preview_url_or_null()
    {
        var list = (await (await _host.Client.GetAsync("v1/styles")).Json()).GetProperty("styles").EnumerateArray()
            .ToDictionary(s => s.GetProperty("name").GetString()!);
        Assert.Equal(PreviewUrl("ghibli"), list["ghibli"].GetProperty("previewUrl").GetString());
        Assert.Equal(PreviewUrl("photo"), list["photo"].GetProperty("previewUrl").GetString());
        foreach (var none in new[] { "plain", "escape", "linked" })
            Assert.Equal(JsonValueKind.Null, list[none].GetProperty("previewUrl").ValueKind); // present, null

        var one = await (await _host.Client.GetAsync("v1/styles/web")).Json();
        Assert.Equal(PreviewUrl("web"), one.GetProperty("previewUrl").GetString());
        Assert.Equal(JsonValueKind.Null, (await (await _host.Client.GetAsync("v1/styles/plain")).Json()).GetProperty("previewUrl").ValueKind);

        // Behind a proxy the configured public base URL is used, as for job links.
        await using var proxied = await ServiceHost.StartAsync(configure: s => s["Omni:Api:PublicBaseUrl"] = "https://omni.example.com/base/",
            engine: new TestEngine { Styles = new StyleCatalog(new StyleCatalogOptions { Folder = _styles }).Styles });
        var viaProxy = await (await proxied.Client.GetAsync("v1/styles/ghibli")).Json();
        Assert.Equal("https://omni.example.com/base/v1/styles/ghibli/preview", viaProxy.GetProperty("previewUrl").GetString());
    }

    [Theory]
    [InlineData("ghibli", "image/png")]
    [InlineData("photo", "image/jpeg")] // named .png, served as what it is
    [InlineData("web", "image/webp")]
    [InlineData("GHIBLI", "image/png")] // names match case-insensitively, as GET /v1/styles/{name}
    public async Task Preview_is_served_with_the_content_type_of_its_actual_format(string style, string contentType)
    {
        using var response = await _host.Client.GetAsync($"v1/styles/{style}/preview");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(contentType, response.Content.Headers.ContentType?.MediaType);
        var expected = style.ToLowerInvariant() switch { "photo" => _jpegNamedPng, "web" => _webp, _ => _png };
        Assert.Equal(expected, await response.Content.ReadAsByteArrayAsync());
        Assert.Equal("nosniff", Assert.Single(response.Headers.GetValues("X-Content-Type-Options")));
        Assert.True(response.Headers.CacheControl is { Public: true, MaxAge: { } age } && age > TimeSpan.Zero, $"{response.Headers.CacheControl}");
        Assert.False(response.Headers.ETag!.IsWeak);
    }

    [Fact]
    public async Task ETag_revalidates_with_304_and_changes_with_the_file()
    {
        using var first = await _host.Client.GetAsync("v1/styles/ghibli/preview");
        var etag = first.Headers.ETag!;

        foreach (var header in new[] { etag.ToString(), "W/" + etag.Tag, "\"other\", " + etag, "*" })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "v1/styles/ghibli/preview");
            request.Headers.TryAddWithoutValidation("If-None-Match", header);
            using var conditional = await _host.Client.SendAsync(request);
            Assert.True(conditional.StatusCode == HttpStatusCode.NotModified, $"If-None-Match: {header} → {(int)conditional.StatusCode}");
            Assert.Empty(await conditional.Content.ReadAsByteArrayAsync());
            Assert.Equal(etag, conditional.Headers.ETag);
            Assert.True(conditional.Headers.CacheControl?.Public);
        }

        using (var stale = new HttpRequestMessage(HttpMethod.Get, "v1/styles/ghibli/preview"))
        {
            stale.Headers.IfNoneMatch.Add(new EntityTagHeaderValue("\"0123\""));
            using var response = await _host.Client.SendAsync(stale);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(_png, await response.Content.ReadAsByteArrayAsync());
        }

        // The operator replaces the image: the next request serves the new bytes under a new tag, and the old tag no longer matches.
        var replaced = TestImages.Png(40, 30, seed: 77);
        File.WriteAllBytes(Path.Combine(_styles, "ghibli.png"), replaced);
        using var old = new HttpRequestMessage(HttpMethod.Get, "v1/styles/ghibli/preview");
        old.Headers.IfNoneMatch.Add(etag);
        using var fresh = await _host.Client.SendAsync(old);
        Assert.Equal(HttpStatusCode.OK, fresh.StatusCode);
        Assert.Equal(replaced, await fresh.Content.ReadAsByteArrayAsync());
        Assert.NotEqual(etag, fresh.Headers.ETag);
    }

    [Fact]
    public async Task Missing_previews_and_styles_are_404_problems()
    {
        await Api.AssertProblemAsync(await _host.Client.GetAsync("v1/styles/plain/preview"), 404, "style-preview-not-found");
        await Api.AssertProblemAsync(await _host.Client.GetAsync("v1/styles/escape/preview"), 404, "style-preview-not-found");
        await Api.AssertProblemAsync(await _host.Client.GetAsync("v1/styles/nope/preview"), 404, "style-not-found");

        var described = await (await _host.Client.GetAsync("problems/style-preview-not-found")).Json();
        Assert.Equal("/problems/style-preview-not-found", described.GetProperty("type").GetString());
    }

    [Fact]
    public async Task Previews_changed_after_the_scan_are_checked_again_when_served()
    {
        // Replaced by a link out of the folder: refused, and the outside file's bytes never go out.
        File.Delete(Path.Combine(_styles, "ghibli.png"));
        File.CreateSymbolicLink(Path.Combine(_styles, "ghibli.png"), Path.Combine(_outside, "secret.png"));
        await Api.AssertProblemAsync(await _host.Client.GetAsync("v1/styles/ghibli/preview"), 404, "style-preview-not-found");

        // A link that stays inside the folder is fine.
        File.Delete(Path.Combine(_styles, "ghibli.png"));
        File.CreateSymbolicLink(Path.Combine(_styles, "ghibli.png"), "web.webp");
        using (var inside = await _host.Client.GetAsync("v1/styles/ghibli/preview"))
        {
            Assert.Equal(HttpStatusCode.OK, inside.StatusCode);
            Assert.Equal("image/webp", inside.Content.Headers.ContentType?.MediaType);
        }

        // No longer an image, or gone.
        File.WriteAllText(Path.Combine(_styles, "photo.png"), "not an image any more");
        await Api.AssertProblemAsync(await _host.Client.GetAsync("v1/styles/photo/preview"), 404, "style-preview-not-found");
        File.Delete(Path.Combine(_styles, "web.webp"));
        await Api.AssertProblemAsync(await _host.Client.GetAsync("v1/styles/web/preview"), 404, "style-preview-not-found");
    }

    [Theory]
    [InlineData("..%2F..%2Fetc%2Fpasswd")]
    [InlineData("%2E%2E%2Fsecret")]
    [InlineData("%2Fetc%2Fpasswd")]
    [InlineData("..%5Csecret")]
    [InlineData("ghibli%00")]
    [InlineData("linked-out.png")]
    public async Task Names_that_try_to_reach_files_are_not_found(string encodedName)
    {
        using var response = await _host.Client.GetAsync($"v1/styles/{encodedName}/preview");
        Assert.True(response.StatusCode is HttpStatusCode.NotFound or HttpStatusCode.BadRequest, $"{encodedName} → {(int)response.StatusCode}");
        // Kestrel itself refuses some (a NUL in the path) with a bare 400 before the app sees them; the app answers problems.
        if (response.StatusCode == HttpStatusCode.NotFound) await Api.AssertProblemAsync(response, 404, "style-not-found");
        Assert.DoesNotContain("root:", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Swagger_documents_the_preview_operation()
    {
        var swagger = await (await _host.Client.GetAsync("swagger/v1/swagger.json")).Json();
        var get = swagger.GetProperty("paths").GetProperty("/v1/styles/{name}/preview").GetProperty("get");
        var text = get.ToString();
        Assert.True(get.TryGetProperty("summary", out var summary) && summary.GetString() is { Length: > 0 }, text);
        var responses = get.GetProperty("responses");
        Assert.True(responses.GetProperty("200").TryGetProperty("content", out var content), text);
        foreach (var type in new[] { "image/png", "image/jpeg", "image/webp" })
            Assert.True(content.TryGetProperty(type, out var body) && body.GetProperty("schema").GetProperty("format").GetString() == "binary", $"{type}: {text}");
        Assert.True(responses.TryGetProperty("404", out var notFound) && notFound.GetProperty("content").TryGetProperty("application/problem+json", out _), text);
        Assert.True(responses.TryGetProperty("304", out _), text);
    }
}

/// <summary>The preview of the built-in demo style, on the service exactly as the README's run command starts it.</summary>
public sealed class BuiltInStylePreviewTests
{
    [Fact]
    public async Task Built_in_demo_style_has_a_preview()
    {
        await using var host = await ServiceHost.StartAsync(useBuiltInEngine: true);
        var style = await (await host.Client.GetAsync("v1/styles/demo-style")).Json();
        var url = style.GetProperty("previewUrl").GetString()!;
        Assert.Equal(new Uri(host.BaseAddress, "v1/styles/demo-style/preview").AbsoluteUri, url);
        using var response = await host.Client.GetAsync(url);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("image/png", response.Content.Headers.ContentType?.MediaType);
        using var image = Image.Load<Rgb24>(await response.Content.ReadAsByteArrayAsync());
        Assert.True(image.Width >= 128 && image.Height >= 128, $"{image.Width}x{image.Height}");
    }
}

/// <summary>The api role lists the LoRA folder without the engine; previews come from that folder too.</summary>
public sealed class ApiRoleStylePreviewTests
{
    [Fact]
    public async Task Api_role_serves_previews_from_the_style_folder_without_the_engine()
    {
        await using var schema = await PostgresTestSchema.CreateAsync();
        var styles = Directory.CreateTempSubdirectory("omni-api-previews-").FullName;
        try
        {
            var jpeg = new MemoryStream();
            using (var img = new Image<Rgb24>(16, 16)) img.SaveAsJpeg(jpeg);
            StylePreviewTests.AddStyle(styles, "demo", "demo.png", jpeg.ToArray());
            StylePreviewTests.AddStyle(styles, "bare", null, null);
            await using var api = await ServiceHost.StartAsync(configure: s =>
            {
                s["Omni:Role"] = "api";
                s["Omni:Storage:Provider"] = "postgres";
                s["Omni:Storage:PostgresConnectionString"] = schema.ConnectionString;
                s["Omni:Engine:LoraFolder"] = styles;
            });
            var style = await (await api.Client.GetAsync("v1/styles/demo")).Json();
            Assert.Equal(new Uri(api.BaseAddress, "v1/styles/demo/preview").AbsoluteUri, style.GetProperty("previewUrl").GetString());
            using var preview = await api.Client.GetAsync("v1/styles/demo/preview");
            Assert.Equal(HttpStatusCode.OK, preview.StatusCode);
            Assert.Equal("image/jpeg", preview.Content.Headers.ContentType?.MediaType);
            Assert.Equal(jpeg.ToArray(), await preview.Content.ReadAsByteArrayAsync());
            await Api.AssertProblemAsync(await api.Client.GetAsync("v1/styles/bare/preview"), 404, "style-preview-not-found");
            Assert.Equal(0, api.Engine.Runs);
        }
        finally
        {
            Directory.Delete(styles, true);
        }
    }
}
