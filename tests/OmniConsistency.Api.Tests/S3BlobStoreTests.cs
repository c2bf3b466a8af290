using System.Net;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Storage;

namespace OmniConsistency.Api.Tests;

/// <summary>The S3 blob store against <see cref="FakeS3"/> on loopback: objects, pre-signed URLs, the /result redirect.</summary>
public sealed class S3BlobStoreTests
{
    private static readonly CancellationToken Ct = CancellationToken.None;

    private static S3BlobOptions Options(FakeS3 s3, bool redirect = true) => new()
    {
        Bucket = "omni", Prefix = "test/", ServiceUrl = s3.ServiceUrl, ForcePathStyle = true,
        AccessKeyId = "AKIDTESTKEY", SecretAccessKey = "test-secret-key", RedirectResults = redirect,
        PresignedUrlLifetime = TimeSpan.FromMinutes(5),
    };

    private static S3BlobStore Store(S3BlobOptions o) => new(Microsoft.Extensions.Options.Options.Create(new BlobOptions { Provider = BlobProvider.S3, S3 = o }));

    [Fact]
    public async Task Objects_are_written_read_and_deleted_under_the_prefix()
    {
        await using var s3 = await FakeS3.StartAsync();
        using var store = Store(Options(s3));
        var data = TestImages.Png();
        await store.WriteAsync("results/abc.png", data, Ct);
        Assert.Equal(data, s3.Objects["omni/test/results/abc.png"]);
        Assert.Equal(data, await store.ReadAllAsync("results/abc.png", Ct));
        await using (var stream = await store.OpenReadAsync("results/abc.png", Ct))
        {
            using var copy = new MemoryStream();
            await stream!.CopyToAsync(copy);
            Assert.Equal(data, copy.ToArray());
        }
        Assert.Null(await store.OpenReadAsync("results/missing.png", Ct));
        await Assert.ThrowsAsync<FileNotFoundException>(() => store.ReadAllAsync("results/missing.png", Ct));
        await store.DeleteAsync("results/abc.png", Ct);
        Assert.Empty(s3.Objects);
        await store.DeleteAsync("results/abc.png", Ct); // deleting twice is fine
        await Assert.ThrowsAsync<ArgumentException>(() => store.WriteAsync("../escape", data, Ct));
    }

    [Fact]
    public async Task Presigned_urls_are_signed_time_limited_and_carry_the_content_type()
    {
        await using var s3 = await FakeS3.StartAsync();
        using var store = Store(Options(s3));
        await store.WriteAsync("results/r.webp", new byte[] { 1, 2, 3 }, Ct);
        var url = await store.GetReadUrlAsync("results/r.webp", "image/webp", Ct);
        Assert.NotNull(url);
        Assert.Equal(new Uri(s3.ServiceUrl).Authority, url.Authority);
        Assert.Equal("http", url.Scheme);
        Assert.Equal("/omni/test/results/r.webp", url.AbsolutePath);
        var query = System.Web.HttpUtility.ParseQueryString(url.Query);
        Assert.Equal("300", query["X-Amz-Expires"]);
        Assert.StartsWith("AKIDTESTKEY/", query["X-Amz-Credential"]);
        Assert.Equal(64, query["X-Amz-Signature"]!.Length);
        Assert.Equal("image/webp", query["response-content-type"]);

        using var client = new HttpClient();
        using var response = await client.GetAsync(url);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("image/webp", response.Content.Headers.ContentType!.MediaType);
        Assert.Equal(new byte[] { 1, 2, 3 }, await response.Content.ReadAsByteArrayAsync());

        using var streaming = Store(Options(s3, redirect: false));
        Assert.Null(await streaming.GetReadUrlAsync("results/r.webp", "image/webp", Ct));
    }

    [Fact]
    public void Incomplete_settings_are_reported()
    {
        Assert.Contains(S3BlobStore.Validate(new S3BlobOptions()), p => p.Contains("Bucket"));
        Assert.Contains(S3BlobStore.Validate(new S3BlobOptions { Bucket = "b", AccessKeyId = "only-the-id" }), p => p.Contains("SecretAccessKey"));
        Assert.Contains(S3BlobStore.Validate(new S3BlobOptions { Bucket = "b", ServiceUrl = "minio:9000" }), p => p.Contains("ServiceUrl"));
        Assert.Contains(S3BlobStore.Validate(new S3BlobOptions { Bucket = "b", PresignedUrlLifetime = TimeSpan.FromDays(8) }), p => p.Contains("7 days"));
        Assert.Empty(S3BlobStore.Validate(new S3BlobOptions { Bucket = "b" }));
    }

    [Fact]
    public async Task The_service_stores_results_in_the_bucket_and_redirects_result_requests_to_a_presigned_url()
    {
        await using var s3 = await FakeS3.StartAsync();
        await using var host = await ServiceHost.StartAsync(configure: s =>
        {
            s["Omni:Blobs:Provider"] = "s3";
            s["Omni:Blobs:S3:Bucket"] = "omni";
            s["Omni:Blobs:S3:Prefix"] = "svc/";
            s["Omni:Blobs:S3:ServiceUrl"] = s3.ServiceUrl;
            s["Omni:Blobs:S3:ForcePathStyle"] = "true";
            s["Omni:Blobs:S3:AccessKeyId"] = "AKIDTESTKEY";
            s["Omni:Blobs:S3:SecretAccessKey"] = "test-secret-key";
        });
        var id = (await host.Client.SubmitAsync(TestImages.Png(), ("steps", "2"), ("seed", "5"))).Id();
        var job = await host.Client.WaitForTerminalAsync(id);
        Assert.Equal("succeeded", job.Status());
        Assert.True(s3.Objects.ContainsKey($"omni/svc/results/{id}.png"));
        // The input is deleted once the job is recorded (just after it shows as succeeded).
        for (var i = 0; i < 100 && s3.Objects.ContainsKey($"omni/svc/inputs/{id}"); i++) await Task.Delay(20);
        Assert.DoesNotContain($"omni/svc/inputs/{id}", s3.Objects.Keys);

        using var noRedirect = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false }) { BaseAddress = host.BaseAddress };
        using var redirect = await noRedirect.GetAsync($"v1/stylizations/{id}/result");
        Assert.Equal(HttpStatusCode.TemporaryRedirect, redirect.StatusCode);
        var location = redirect.Headers.Location!;
        Assert.Equal($"/omni/svc/results/{id}.png", location.AbsolutePath);
        Assert.Contains("X-Amz-Signature=", location.Query);

        using var image = await noRedirect.GetAsync(location);
        Assert.Equal("image/png", image.Content.Headers.ContentType!.MediaType);
        Assert.Equal(s3.Objects[$"omni/svc/results/{id}.png"], await image.Content.ReadAsByteArrayAsync());

        // A conditional GET that matches is answered by the API without a redirect.
        using var conditional = new HttpRequestMessage(HttpMethod.Get, $"v1/stylizations/{id}/result");
        conditional.Headers.TryAddWithoutValidation("If-None-Match", redirect.Headers.ETag!.ToString());
        using var notModified = await noRedirect.SendAsync(conditional);
        Assert.Equal(HttpStatusCode.NotModified, notModified.StatusCode);
    }
}
