namespace OmniConsistency.Api.Endpoints;

/// <summary>
/// The stable problem `type`s (RFC 9457). Clients switch on these; never rename one. Each is "/problems/{slug}",
/// a URI reference relative to the service; GET /problems/{slug} describes it.
/// </summary>
public static class ProblemTypes
{
    public const string Prefix = "/problems/";

    public static readonly IReadOnlyDictionary<string, string> Descriptions = new Dictionary<string, string>
    {
        ["validation-error"] = "A field is missing or out of range; `errors` names each field and what is wrong.",
        ["invalid-request-body"] = "The body is not valid multipart/form-data or JSON, or has unknown fields.",
        ["unsupported-media-type"] = "Send multipart/form-data or application/json.",
        ["invalid-image"] = "The image could not be read as PNG, JPEG or WebP.",
        ["image-too-large"] = "The image exceeds the configured byte size or pixel limits.",
        ["request-too-large"] = "The request body exceeds the configured limit.",
        ["unknown-style"] = "A requested style is not in the catalog (GET /v1/styles).",
        ["invalid-size"] = "The output size or condition size is not allowed.",
        ["webhook-url-not-allowed"] = "The webhook URL is not http(s) or points at a private, loopback or link-local address.",
        ["idempotency-key-reused"] = "This Idempotency-Key was already used with a different request.",
        ["invalid-idempotency-key"] = "The Idempotency-Key header is empty or too long.",
        ["queue-full"] = "The job queue is full; retry after the Retry-After delay.",
        ["rate-limited"] = "Too many requests for this API key; retry after the Retry-After delay.",
        ["unauthorized"] = "A valid API key is required (Authorization: Bearer <key> or X-Api-Key).",
        ["forbidden"] = "The service runs without API keys and only accepts loopback clients.",
        ["not-found"] = "No such resource (or it belongs to another API key).",
        ["style-not-found"] = "No style of that name in the catalog.",
        ["style-preview-not-found"] = "The style has no preview image (its `previewUrl` is null), or its file is no longer a readable PNG, JPEG or WebP in the style folder.",
        ["result-not-ready"] = "The job has no result (yet): see its status.",
        ["result-expired"] = "The result was deleted after the retention period.",
        ["job-not-cancelable"] = "The job already finished.",
        ["job-not-finished"] = "The job is queued or running and cannot be deleted: cancel it (POST /v1/stylizations/{id}/cancel), then delete it once it has finished.",
        ["method-not-allowed"] = "The resource does not support this method.",
        ["not-ready"] = "The service is not ready: the engine is not loaded or the worker is not running.",
        ["engine-unavailable"] = "No stylization engine is loaded.",
        ["job-timeout"] = "The job ran longer than the configured timeout.",
        ["job-interrupted"] = "The job was interrupted too often by restarts.",
        ["job-canceled"] = "The job was canceled.",
        ["inference-failed"] = "The engine failed while running the job (e.g. out of memory, bad weights).",
        ["internal-error"] = "An unexpected error; the request id in the log tells what happened.",
        ["bad-request"] = "The request is malformed.",
        ["http-error"] = "An HTTP error without a more specific type.",
    };

    public static string Uri(string slug) => Prefix + slug;
}
