using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// Just enough of the S3 REST API on loopback for the blob store: path-style PUT, GET and DELETE of objects, each
/// request required to carry a SigV4 signature (header or pre-signed query; the signature itself is not verified).
/// Pre-signed GETs honour response-content-type as S3 does.
/// </summary>
public sealed class FakeS3 : IAsyncDisposable
{
    private readonly WebApplication _app;
    public ConcurrentDictionary<string, byte[]> Objects { get; } = new();
    public ConcurrentQueue<string> Requests { get; } = new();
    public string ServiceUrl { get; }

    private FakeS3(WebApplication app)
    {
        _app = app;
        ServiceUrl = app.Urls.First();
    }

    public static async Task<FakeS3> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        FakeS3? s3 = null;
        app.Run(async http =>
        {
            var key = Uri.UnescapeDataString(http.Request.Path.Value!.TrimStart('/')); // "<bucket>/<key>"
            var presigned = http.Request.Query.ContainsKey("X-Amz-Signature");
            s3!.Requests.Enqueue($"{http.Request.Method} {key}{(presigned ? " presigned" : "")}");
            var signed = presigned || http.Request.Headers.Authorization.ToString().StartsWith("AWS4-HMAC-SHA256 ", StringComparison.Ordinal);
            if (!signed || !key.Contains('/'))
            {
                http.Response.StatusCode = 403;
                return;
            }
            switch (http.Request.Method)
            {
                case "PUT":
                    using (var body = new MemoryStream())
                    {
                        await http.Request.Body.CopyToAsync(body);
                        s3.Objects[key] = body.ToArray();
                    }
                    http.Response.Headers.ETag = "\"fake\"";
                    return;
                case "GET" when s3.Objects.TryGetValue(key, out var data):
                    http.Response.ContentType = http.Request.Query["response-content-type"].FirstOrDefault() ?? "application/octet-stream";
                    http.Response.ContentLength = data.Length;
                    await http.Response.Body.WriteAsync(data);
                    return;
                case "GET":
                    http.Response.StatusCode = 404;
                    http.Response.ContentType = "application/xml";
                    await http.Response.WriteAsync($"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>{key}</Key></Error>");
                    return;
                case "DELETE":
                    s3.Objects.TryRemove(key, out _);
                    http.Response.StatusCode = 204;
                    return;
                default:
                    http.Response.StatusCode = 405;
                    return;
            }
        });
        await app.StartAsync();
        s3 = new FakeS3(app);
        return s3;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
