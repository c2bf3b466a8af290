using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;
using OmniConsistency.Api.Endpoints;
using OmniConsistency.Api.Options;

namespace OmniConsistency.Api.Security;

/// <summary>The configured API keys, kept only as SHA-256 hashes.</summary>
public sealed class ApiKeyRegistry
{
    public sealed record Identity(string Name, int? PermitsPerMinute);

    private readonly Dictionary<string, Identity> _byHash = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Identity> _byName = new(StringComparer.Ordinal);

    public ApiKeyRegistry(IOptions<AuthOptions> options)
    {
        foreach (var entry in options.Value.ApiKeys)
        {
            var hash = !string.IsNullOrEmpty(entry.Key) ? Hash(entry.Key) : entry.KeySha256!.ToLowerInvariant();
            _byHash[hash] = _byName[entry.Name] = new Identity(entry.Name, entry.PermitsPerMinute);
            entry.Key = null; // the plain key is not kept in memory longer than start-up
        }
    }

    /// <summary>No keys configured: the service runs open (loopback only).</summary>
    public bool Open => _byHash.Count == 0;

    public static string Hash(string key) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)));

    /// <summary>
    /// Looks the key up by its SHA-256. Timing of the lookup can only reveal hash prefixes, which say nothing about
    /// the key, so no constant-time compare is needed.
    /// </summary>
    public Identity? Find(string presentedKey) => _byHash.GetValueOrDefault(Hash(presentedKey));

    public Identity? ByName(string name) => _byName.GetValueOrDefault(name);
}

/// <summary>Authenticates "Authorization: Bearer &lt;key&gt;" or "X-Api-Key: &lt;key&gt;". The key's name becomes the caller's identity.</summary>
public sealed class ApiKeyAuthenticationHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options,
    ILoggerFactory loggerFactory,
    UrlEncoder encoder,
    ApiKeyRegistry registry) : AuthenticationHandler<AuthenticationSchemeOptions>(options, loggerFactory, encoder)
{
    public const string SchemeName = "ApiKey";
    public const string OwnerClaim = "omni:owner";

    protected override Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        if (registry.Open) return Task.FromResult(Success(""));
        string? key = null;
        var authorization = Request.Headers.Authorization.ToString();
        if (authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)) key = authorization["Bearer ".Length..].Trim();
        else if (Request.Headers.TryGetValue("X-Api-Key", out var header)) key = header.ToString().Trim();
        if (string.IsNullOrEmpty(key)) return Task.FromResult(AuthenticateResult.NoResult());
        var identity = registry.Find(key);
        return Task.FromResult(identity is null ? AuthenticateResult.Fail("Unknown API key.") : Success(identity.Name));
    }

    private AuthenticateResult Success(string owner)
    {
        var identity = new ClaimsIdentity([new Claim(OwnerClaim, owner), new Claim(ClaimTypes.Name, owner == "" ? "anonymous" : owner)], SchemeName);
        return AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), SchemeName));
    }

    protected override async Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        var presented = Request.Headers.Authorization.Count > 0 || Request.Headers.ContainsKey("X-Api-Key");
        Response.Headers.WWWAuthenticate = "Bearer";
        await ProblemWriter.WriteAsync(Context, 401, "unauthorized", presented ? "Invalid API key" : "API key required",
            presented ? "The API key is not valid." : "Send an API key as 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'.");
    }

    protected override Task HandleForbiddenAsync(AuthenticationProperties properties) =>
        ProblemWriter.WriteAsync(Context, 403, "forbidden", "Forbidden", "This API key may not do this.");
}

public static class CallerExtensions
{
    /// <summary>The owner jobs are filed under: the API key's name, or "" when the service runs open.</summary>
    public static string Owner(this HttpContext http) => http.User.FindFirst(ApiKeyAuthenticationHandler.OwnerClaim)?.Value ?? "";
}
