using System.Net;
using System.Net.Http.Headers;
using System.Text;

namespace OmniConsistency.Api.Tests;

public sealed class ServiceHostFixture : IAsyncLifetime
{
    public ServiceHost Host { get; private set; } = null!;
    public async ValueTask InitializeAsync() => Host = await ServiceHost.StartAsync();
    public async ValueTask DisposeAsync() => await Host.DisposeAsync();
}

/// <summary>Every bad request gets a 4xx problem+json with a stable type, and the service stays healthy.</summary>
public sealed class BadInputTests(ServiceHostFixture fixture) : IClassFixture<ServiceHostFixture>
{
    private ServiceHost Host => fixture.Host;

    public static TheoryData<string, int, string> Cases => new()
    {
        { "empty-body", 400, "invalid-request-body" },
        { "empty-json-body", 400, "invalid-request-body" },
        { "no-body-at-all", 400, "invalid-request-body" },
        { "no-content-type", 415, "unsupported-media-type" },
        { "url-encoded-form", 415, "unsupported-media-type" },
        { "no-image", 400, "validation-error" },
        { "corrupt-image", 400, "invalid-image" },
        { "truncated-png", 400, "invalid-image" },
        { "gif-image", 400, "invalid-image" },
        { "too-large-image", 413, "image-too-large" },
        { "decompression-bomb", 413, "image-too-large" },
        { "unknown-style", 400, "unknown-style" },
        { "steps-0", 400, "validation-error" },
        { "steps-1000", 400, "validation-error" },
        { "width-not-16", 400, "validation-error" },
        { "width-too-large", 400, "validation-error" },
        { "bad-condition-fit", 400, "validation-error" },
        { "bad-number", 400, "validation-error" },
        { "unknown-field", 400, "validation-error" },
        { "bad-webhook-event", 400, "validation-error" },
        { "webhook-metadata-ip", 400, "webhook-url-not-allowed" },
        { "webhook-private-ip", 400, "webhook-url-not-allowed" },
        { "webhook-ipv6-link-local", 400, "webhook-url-not-allowed" },
        { "webhook-not-http", 400, "webhook-url-not-allowed" },
        { "oversized-request", 413, "request-too-large" },
        { "oversized-chunked-request", 413, "request-too-large" },
        { "malformed-json", 400, "invalid-request-body" },
        { "json-unknown-field", 400, "invalid-request-body" },
        { "json-bad-base64", 400, "validation-error" },
        { "json-image-too-large", 413, "image-too-large" },
        { "bad-idempotency-key", 400, "invalid-idempotency-key" },
        { "unknown-job", 404, "not-found" },
        { "malformed-job-id", 404, "not-found" },
        { "unknown-route", 404, "not-found" },
        { "wrong-method", 405, "method-not-allowed" },
    };

    private static HttpRequestMessage Post(HttpContent content) => new(HttpMethod.Post, "v1/stylizations") { Content = content };

    private static HttpRequestMessage Form(params (string, string)[] fields) => Post(Api.Form(TestImages.Png(), fields));

    private static HttpRequestMessage Json(string json) => Post(new StringContent(json, Encoding.UTF8, "application/json"));

    private static HttpRequestMessage Build(string name)
    {
        switch (name)
        {
            case "empty-body":
                return Post(new ByteArrayContent([]) { Headers = { ContentType = MediaTypeHeaderValue.Parse("multipart/form-data; boundary=x") } });
            case "empty-json-body":
                return Json("");
            case "no-body-at-all":
                return new HttpRequestMessage(HttpMethod.Post, "v1/stylizations");
            case "no-content-type":
                return Post(new ByteArrayContent(TestImages.Png()));
            case "url-encoded-form":
                return Post(new FormUrlEncodedContent([new("steps", "4")]));
            case "no-image":
            {
                var form = new MultipartFormDataContent { { new StringContent("4"), "steps" } };
                return Post(form);
            }
            case "corrupt-image":
                return Post(Api.Form(Encoding.ASCII.GetBytes("this is not an image at all, just text pretending")));
            case "truncated-png":
                return Post(Api.Form(TestImages.TruncatedPng()));
            case "gif-image":
                return Post(Api.Form([.. "GIF89a"u8, 1, 0, 1, 0, 0, 0, 0, 0x3B]));
            case "too-large-image":
                return Post(Api.Form(TestImages.NoisePng(320, 320)));
            case "decompression-bomb":
                return Post(Api.Form(TestImages.DecompressionBombPng()));
            case "unknown-style": return Form(("style", "no-such-style"));
            case "steps-0": return Form(("steps", "0"));
            case "steps-1000": return Form(("steps", "1000"));
            case "width-not-16": return Form(("width", "100"), ("height", "64"));
            case "width-too-large": return Form(("width", "4096"), ("height", "64"));
            case "bad-condition-fit": return Form(("conditionFit", "zoom"));
            case "bad-number": return Form(("guidance", "lots"));
            case "unknown-field": return Form(("stepz", "4"));
            case "bad-webhook-event": return Form(("webhookUrl", "http://127.0.0.1:9/hook"), ("webhookEvents", "exploded"));
            case "webhook-metadata-ip": return Form(("webhookUrl", "http://169.254.169.254/latest/meta-data"));
            case "webhook-private-ip": return Form(("webhookUrl", "http://10.0.0.1/hook"));
            case "webhook-ipv6-link-local": return Form(("webhookUrl", "http://[fe80::1]/hook"));
            case "webhook-not-http": return Form(("webhookUrl", "ftp://example.com/hook"));
            case "oversized-request":
            {
                // Refused from Content-Length before the body is read; "Expect: 100-continue" is how a client
                // learns that without sending the body (without it the server closes the connection mid-upload).
                var request = Post(Api.Form(TestImages.Png(), ("prompt", "x"), ("padding", new string('a', 1_200_000))));
                request.Headers.ExpectContinue = true;
                return request;
            }
            case "oversized-chunked-request":
            {
                var content = new StreamContent(new MemoryStream(new byte[1_300_000]));
                content.Headers.ContentType = MediaTypeHeaderValue.Parse("multipart/form-data; boundary=zzz");
                var request = Post(content);
                request.Headers.TransferEncodingChunked = true;
                return request;
            }
            case "malformed-json": return Json("{\"image\": ");
            case "json-unknown-field": return Json("{\"image\": \"AAAA\", \"stepz\": 3}");
            case "json-bad-base64": return Json("{\"image\": \"***not base64***\"}");
            case "json-image-too-large": return Json("{\"image\": \"" + Convert.ToBase64String(new byte[400_000]) + "\"}");
            case "bad-idempotency-key":
            {
                var request = Form();
                request.Headers.Add("Idempotency-Key", new string('k', 300));
                return request;
            }
            case "unknown-job": return new HttpRequestMessage(HttpMethod.Get, "v1/stylizations/0123456789abcdef0123456789abcdef");
            case "malformed-job-id": return new HttpRequestMessage(HttpMethod.Get, "v1/stylizations/..%2F..%2Fetc");
            case "unknown-route": return new HttpRequestMessage(HttpMethod.Get, "v1/nothing-here");
            case "wrong-method": return new HttpRequestMessage(HttpMethod.Delete, "v1/stylizations");
            default: throw new ArgumentException(name);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Bad_request_gets_a_problem_and_the_service_stays_healthy(string name, int status, string type)
    {
        using var request = Build(name);
        using var response = await Host.Client.SendAsync(request);
        await Api.AssertProblemAsync(response, status, type);
        using var health = await Host.Client.GetAsync("healthz");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
    }

    [Fact]
    public async Task Validation_problem_names_each_bad_field()
    {
        using var response = await Host.Client.SendAsync(Form(("steps", "0"), ("width", "100"), ("height", "64"), ("guidance", "-1")));
        var problem = await response.Json();
        var errors = problem.GetProperty("errors");
        foreach (var field in new[] { "steps", "width", "guidance" }) Assert.True(errors.TryGetProperty(field, out _), field);
        Assert.False(string.IsNullOrEmpty(problem.GetProperty("requestId").GetString()));
    }

    [Fact]
    public async Task After_bad_requests_a_good_job_still_succeeds()
    {
        foreach (var name in new[] { "corrupt-image", "decompression-bomb", "oversized-request", "malformed-json" })
        {
            using var request = Build(name);
            using var _ = await Host.Client.SendAsync(request);
        }
        var job = await Host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"));
        Assert.Equal("succeeded", (await Host.Client.WaitForTerminalAsync(job.Id())).Status());
    }
}
