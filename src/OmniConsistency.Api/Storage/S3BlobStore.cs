using System.Net;
using Amazon;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using Microsoft.Extensions.Options;
using OmniConsistency.Api.Options;

namespace OmniConsistency.Api.Storage;

/// <summary>
/// Blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...) under <see cref="S3BlobOptions.Prefix"/>. Results
/// are handed out as pre-signed GET URLs (the API redirects to them), so image bytes don't pass through API replicas.
/// </summary>
public sealed class S3BlobStore : IBlobStore, IBlobUrlSigner, IDisposable
{
    private readonly IAmazonS3 _client;
    private readonly S3BlobOptions _options;
    private readonly Protocol _urlProtocol;

    public S3BlobStore(IOptions<BlobOptions> options)
    {
        _options = options.Value.S3;
        _client = CreateClient(_options);
        _urlProtocol = _options.ServiceUrl is { } url && url.StartsWith("http://", StringComparison.OrdinalIgnoreCase) ? Protocol.HTTP : Protocol.HTTPS;
    }

    public static IAmazonS3 CreateClient(S3BlobOptions o)
    {
        var config = new AmazonS3Config
        {
            ForcePathStyle = o.ForcePathStyle,
            // The SDK's default extra checksums (aws-chunked trailers) are refused by many S3-compatible services;
            // send them only where S3 requires them.
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
        };
        if (!string.IsNullOrWhiteSpace(o.ServiceUrl))
        {
            config.ServiceURL = o.ServiceUrl;
            config.AuthenticationRegion = string.IsNullOrWhiteSpace(o.Region) ? "us-east-1" : o.Region;
        }
        else if (!string.IsNullOrWhiteSpace(o.Region))
        {
            config.RegionEndpoint = RegionEndpoint.GetBySystemName(o.Region);
        }
        return string.IsNullOrEmpty(o.AccessKeyId)
            ? new AmazonS3Client(config)
            : new AmazonS3Client(new BasicAWSCredentials(o.AccessKeyId, o.SecretAccessKey), config);
    }

    /// <summary>Problems with the S3 settings, one line each (empty when valid); checked at start.</summary>
    public static IEnumerable<string> Validate(S3BlobOptions o)
    {
        if (string.IsNullOrWhiteSpace(o.Bucket)) yield return "Omni:Blobs:S3:Bucket is required with Omni:Blobs:Provider=s3.";
        if (string.IsNullOrEmpty(o.AccessKeyId) != string.IsNullOrEmpty(o.SecretAccessKey))
            yield return "Omni:Blobs:S3:AccessKeyId and SecretAccessKey go together (or leave both empty for the AWS default credentials).";
        if (!string.IsNullOrWhiteSpace(o.ServiceUrl) &&
            !(Uri.TryCreate(o.ServiceUrl, UriKind.Absolute, out var u) && (u.Scheme == Uri.UriSchemeHttp || u.Scheme == Uri.UriSchemeHttps)))
            yield return "Omni:Blobs:S3:ServiceUrl must be an absolute http(s) URL.";
        // SigV4 pre-signed URLs live at most 7 days.
        if (o.PresignedUrlLifetime < TimeSpan.FromSeconds(1) || o.PresignedUrlLifetime > TimeSpan.FromDays(7))
            yield return "Omni:Blobs:S3:PresignedUrlLifetime must be between 1 second and 7 days.";
        if (o.Prefix.StartsWith('/') || o.Prefix.Contains("..", StringComparison.Ordinal))
            yield return "Omni:Blobs:S3:Prefix must not start with '/' or contain '..'.";
    }

    private string Key(string name) => _options.Prefix + BlobNames.Check(name);

    public async Task WriteAsync(string name, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        using var body = new MemoryStream(data.ToArray(), writable: false);
        await _client.PutObjectAsync(new PutObjectRequest
        {
            BucketName = _options.Bucket,
            Key = Key(name),
            InputStream = body,
            AutoCloseStream = false,
            // The body is in memory: a plain signed payload works with every S3-compatible service.
            UseChunkEncoding = false,
        }, ct);
    }

    public async Task<Stream?> OpenReadAsync(string name, CancellationToken ct)
    {
        try
        {
            var response = await _client.GetObjectAsync(_options.Bucket, Key(name), ct);
            return new ResponseStream(response);
        }
        catch (AmazonS3Exception e) when (e.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    public async Task<byte[]> ReadAllAsync(string name, CancellationToken ct)
    {
        await using var stream = await OpenReadAsync(name, ct) ?? throw new FileNotFoundException($"Blob '{name}' is not in bucket '{_options.Bucket}'.");
        using var copy = new MemoryStream();
        await stream.CopyToAsync(copy, ct);
        return copy.ToArray();
    }

    public async Task DeleteAsync(string name, CancellationToken ct) =>
        await _client.DeleteObjectAsync(_options.Bucket, Key(name), ct);

    public async Task<Uri?> GetReadUrlAsync(string name, string contentType, CancellationToken ct)
    {
        if (!_options.RedirectResults) return null;
        var url = await _client.GetPreSignedURLAsync(new GetPreSignedUrlRequest
        {
            BucketName = _options.Bucket,
            Key = Key(name),
            Verb = HttpVerb.GET,
            Protocol = _urlProtocol,
            Expires = DateTime.UtcNow + _options.PresignedUrlLifetime,
            ResponseHeaderOverrides = { ContentType = contentType },
        });
        return new Uri(url);
    }

    public void Dispose() => _client.Dispose();

    /// <summary>The object's body; disposing it disposes the response (and returns its connection).</summary>
    private sealed class ResponseStream(GetObjectResponse response) : Stream
    {
        private readonly Stream _inner = response.ResponseStream;
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => response.ContentLength;
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => _inner.Read(buffer, offset, count);
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => _inner.ReadAsync(buffer, ct);
        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) => _inner.ReadAsync(buffer, offset, count, ct);
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing) response.Dispose();
            base.Dispose(disposing);
        }
    }
}
