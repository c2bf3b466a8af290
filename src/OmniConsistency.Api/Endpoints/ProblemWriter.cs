using System.Globalization;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Mvc;

namespace OmniConsistency.Api.Endpoints;

/// <summary>Writes RFC 9457 problem+json through the problem details service, so every problem gets the same extensions.</summary>
public static class ProblemWriter
{
    public static ProblemDetails Create(HttpContext http, int status, string slug, string title, string detail, IDictionary<string, string[]>? errors = null)
    {
        var problem = new ProblemDetails { Status = status, Type = ProblemTypes.Uri(slug), Title = title, Detail = detail, Instance = http.Request.Path };
        if (errors is not null) problem.Extensions["errors"] = errors;
        return problem;
    }

    public static async Task WriteAsync(HttpContext http, int status, string slug, string title, string detail,
        IDictionary<string, string[]>? errors = null, TimeSpan? retryAfter = null)
    {
        if (http.Response.HasStarted) return;
        http.Response.StatusCode = status;
        if (retryAfter is { } ra) http.Response.Headers.RetryAfter = Math.Max(1, (int)Math.Ceiling(ra.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        var service = http.RequestServices.GetRequiredService<IProblemDetailsService>();
        await service.WriteAsync(new ProblemDetailsContext { HttpContext = http, ProblemDetails = Create(http, status, slug, title, detail, errors) });
    }

    /// <summary>The type slug for a status when nothing more specific is known (framework-generated errors).</summary>
    public static string SlugForStatus(int status) => status switch
    {
        400 => "bad-request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not-found",
        405 => "method-not-allowed",
        413 => "request-too-large",
        415 => "unsupported-media-type",
        429 => "rate-limited",
        500 => "internal-error",
        503 => "not-ready",
        _ => "http-error",
    };

    /// <summary>Fills the shared fields of every problem (also the framework's own ones): a stable type and the request id.</summary>
    public static void Customize(ProblemDetailsContext context)
    {
        var p = context.ProblemDetails;
        var status = p.Status ?? context.HttpContext.Response.StatusCode;
        if (p.Type is null || !p.Type.StartsWith(ProblemTypes.Prefix, StringComparison.Ordinal)) p.Type = ProblemTypes.Uri(SlugForStatus(status));
        p.Instance ??= context.HttpContext.Request.Path;
        p.Extensions["requestId"] = context.HttpContext.TraceIdentifier;
        if (context.Exception is not null && status >= 500)
        {
            // Never leak exception text of unexpected failures; the log has it under the request id.
            p.Title = "Internal error";
            p.Detail = "An unexpected error occurred; the service log has the details under this request id.";
        }
    }
}

/// <summary>Turns exceptions into problems: <see cref="ApiProblemException"/> as given, request-size errors as 413, the rest as 500.</summary>
public sealed class ApiExceptionHandler(ILogger<ApiExceptionHandler> logger) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext http, Exception exception, CancellationToken ct)
    {
        switch (exception)
        {
            case ApiProblemException p:
                await ProblemWriter.WriteAsync(http, p.Status, p.Slug, p.Title, p.Message, p.Errors, p.RetryAfter);
                return true;
            case BadHttpRequestException { StatusCode: 413 }:
                await ProblemWriter.WriteAsync(http, 413, "request-too-large", "Request too large", "The request body exceeds the configured limit.");
                return true;
            case BadHttpRequestException b:
                await ProblemWriter.WriteAsync(http, b.StatusCode, ProblemWriter.SlugForStatus(b.StatusCode), "Bad request", b.Message);
                return true;
            case OperationCanceledException when http.RequestAborted.IsCancellationRequested:
                return true; // the client went away; nothing to answer
            default:
                logger.LogError(exception, "Unhandled exception on {Method} {Path}", http.Request.Method, http.Request.Path);
                await ProblemWriter.WriteAsync(http, 500, "internal-error", "Internal error",
                    "An unexpected error occurred; the service log has the details under this request id.");
                return true;
        }
    }
}
