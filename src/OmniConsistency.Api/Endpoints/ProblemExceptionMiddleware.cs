namespace OmniConsistency.Api.Endpoints;

/// <summary>Writes <see cref="ApiProblemException"/>s as problems inside the request log (so they are logged as the 4xx they are).</summary>
public sealed class ProblemExceptionMiddleware(RequestDelegate next)
{
    public async Task InvokeAsync(HttpContext http)
    {
        try
        {
            await next(http);
        }
        catch (ApiProblemException p) when (!http.Response.HasStarted)
        {
            await ProblemWriter.WriteAsync(http, p.Status, p.Slug, p.Title, p.Message, p.Errors, p.RetryAfter);
        }
    }
}
