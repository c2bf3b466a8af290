namespace OmniConsistency.Api.Endpoints;

/// <summary>A request that ends in a problem response; thrown from anywhere below an endpoint and written by the exception handler.</summary>
public sealed class ApiProblemException(int status, string slug, string title, string detail,
    IDictionary<string, string[]>? errors = null, TimeSpan? retryAfter = null) : Exception(detail)
{
    public int Status { get; } = status;
    public string Slug { get; } = slug;
    public string Title { get; } = title;
    public IDictionary<string, string[]>? Errors { get; } = errors;
    public TimeSpan? RetryAfter { get; } = retryAfter;
}
