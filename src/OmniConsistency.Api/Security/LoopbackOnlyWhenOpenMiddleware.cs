using System.Net;
using OmniConsistency.Api.Endpoints;

namespace OmniConsistency.Api.Security;

/// <summary>Refuses non-loopback clients while no API keys are configured.</summary>
public sealed class LoopbackOnlyWhenOpenMiddleware(RequestDelegate next)
{
    public async Task InvokeAsync(HttpContext http)
    {
        var remote = http.Connection.RemoteIpAddress;
        if (http.RequestServices.GetRequiredService<ApiKeyRegistry>().Open && remote is not null && !IPAddress.IsLoopback(remote))
        {
            await ProblemWriter.WriteAsync(http, 403, "forbidden", "Loopback only",
                "No API keys are configured, so the service only serves clients on this machine.");
            return;
        }
        await next(http);
    }
}
