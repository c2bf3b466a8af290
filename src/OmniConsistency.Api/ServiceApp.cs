using System.Net;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.Options;
using OmniConsistency.Api.Endpoints;
using OmniConsistency.Api.Engine;
using OmniConsistency.Api.Hosting;
using OmniConsistency.Api.Jobs;
using OmniConsistency.Api.Observability;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Security;
using OmniConsistency.Api.Storage;
using OmniConsistency.Api.Styles;
using OmniConsistency.Api.Webhooks;
using Serilog;
using Serilog.Events;

namespace OmniConsistency.Api;

/// <summary>
/// The composition root. Program.cs calls <see cref="CreateBuilder"/> then <see cref="Build"/>; tests do the same with
/// their own configuration and engine between the two.
/// </summary>
public static class ServiceApp
{
    /// <param name="configure">Adds configuration sources (tests: in-memory values) before anything reads configuration.</param>
    public static WebApplicationBuilder CreateBuilder(string[] args, Action<ConfigurationManager>? configure = null)
    {
        var builder = WebApplication.CreateBuilder(args);
        builder.Configuration.AddCommandLine(args, ScaleOutRegistration.CommandLineSwitches);
        configure?.Invoke(builder.Configuration);
        var services = builder.Services;
        var config = builder.Configuration;
        var role = RoleOptions.Read(config);

        services.AddSerilog((sp, log) =>
        {
            log.MinimumLevel.Override("Microsoft.AspNetCore", LogEventLevel.Warning)
                .MinimumLevel.Override("Microsoft.AspNetCore.DataProtection", LogEventLevel.Error)
                .ReadFrom.Configuration(config).ReadFrom.Services(sp)
                .Enrich.FromLogContext().Enrich.With<CorrelationEnricher>();
            // Serilog:WriteTo in configuration replaces the default console sink; Omni:Logging:Json switches it to JSON lines.
            if (!config.GetSection("Serilog:WriteTo").Exists())
            {
                if (config.GetValue<bool>("Omni:Logging:Json")) log.WriteTo.Console(new Serilog.Formatting.Compact.RenderedCompactJsonFormatter());
                else log.WriteTo.Console(outputTemplate: "[{Timestamp:HH:mm:ss.fff} {Level:u3}] {Message:lj}{Correlation}{NewLine}{Exception}");
            }
        });

        AddOptions<StorageOptions>(services, StorageOptions.Section);
        AddOptions<QueueOptions>(services, QueueOptions.Section)
            .Validate(o => o.LeaseDuration >= TimeSpan.FromSeconds(3), "Omni:Queue:LeaseDuration must be at least 3 s.")
            .Validate(o => o.PollInterval > TimeSpan.Zero, "Omni:Queue:PollInterval must be positive.");
        AddOptions<WorkerOptions>(services, WorkerOptions.Section)
            .Validate(o => o.JobTimeout > TimeSpan.Zero, "Omni:Worker:JobTimeout must be positive.");
        AddOptions<LimitsOptions>(services, LimitsOptions.Section)
            .Validate(o => o.MaxImageBytes <= o.MaxRequestBytes, "Omni:Limits:MaxImageBytes must not exceed MaxRequestBytes.");
        AddOptions<ApiOptions>(services, ApiOptions.Section)
            .Validate(o => o.PublicBaseUrl is null || Uri.TryCreate(o.PublicBaseUrl, UriKind.Absolute, out _), "Omni:Api:PublicBaseUrl must be an absolute URL.");
        AddOptions<WebhookOptions>(services, WebhookOptions.Section)
            .Validate(o => string.IsNullOrWhiteSpace(o.Secret) || IsValidSecret(o.Secret), "Omni:Webhooks:Secret must be 'whsec_' + base64 of at least 16 bytes.")
            .Validate(o => o.AllowedNetworks.All(n => IPNetwork.TryParse(n, out _)), "Omni:Webhooks:AllowedNetworks entries must be CIDR ranges like 127.0.0.1/32.")
            .Validate(o => o.AttemptTimeout > TimeSpan.Zero && o.RetryBaseDelay > TimeSpan.Zero && o.MaxDeliveryAge > TimeSpan.Zero && o.PollInterval > TimeSpan.Zero,
                "Omni:Webhooks timings must be positive.");
        AddOptions<AuthOptions>(services, AuthOptions.Section)
            .Validate(o => o.ApiKeys.All(k => !string.IsNullOrWhiteSpace(k.Name)), "Every Omni:Auth:ApiKeys entry needs a Name.")
            .Validate(o => o.ApiKeys.All(k => !string.IsNullOrEmpty(k.Key) || IsSha256Hex(k.KeySha256)),
                "Every Omni:Auth:ApiKeys entry needs a Key or a KeySha256 (64 hex digits).")
            .Validate(o => o.ApiKeys.Select(k => k.Name).Distinct().Count() == o.ApiKeys.Count, "Omni:Auth:ApiKeys names must be unique.")
            .Validate(o => o.ApiKeys.All(k => k.PermitsPerMinute is null or > 0), "Omni:Auth:ApiKeys PermitsPerMinute must be positive.");
        AddOptions<RateLimitOptions>(services, RateLimitOptions.Section);
        AddOptions<BlobOptions>(services, BlobOptions.Section);
        AddOptions<EngineCatalogOptions>(services, EngineCatalogOptions.Section)
            .Validate(o => double.IsFinite(o.MinGuidance) && double.IsFinite(o.MaxGuidance) && o.MinGuidance <= o.MaxGuidance,
                "Omni:Engine:MinGuidance..MaxGuidance must be a finite range.");

        var limits = config.GetSection(LimitsOptions.Section).Get<LimitsOptions>() ?? new LimitsOptions();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = limits.MaxRequestBytes;
            k.AddServerHeader = false;
        });
        // A worker serves only health and metrics (no /v1), so it listens where its probes can reach it.
        if (role.RunsApi()) RestrictToLoopbackWhenOpen(builder);

        services.AddSingleton(TimeProvider.System);
        services.AddSingleton<IJobTransitionEffects, JobTransitionEffectsFactory>();
        var storeProvider = services.AddScaleOutServices(config, role);
        services.AddSingleton<JobSignals>();
        services.AddSingleton<RunningJobs>();
        services.AddSingleton<WorkerStatus>();
        services.AddSingleton<ServiceMetrics>();
        services.AddSingleton<JobService>();
        services.AddSingleton<SubmissionValidator>();
        services.AddSingleton<DestinationPolicy>();
        services.AddSingleton<WebhookSigner>();
        services.AddSingleton<WebhookHttpClientFactory>();
        services.AddSingleton<ApiKeyRegistry>();
        services.AddSingleton<EngineHost>();

        // Order matters: the store is ready (and crashed jobs re-queued) before the engine, worker and dispatcher start.
        // The api role never loads the model; the worker role neither serves /v1 nor sends webhooks.
        services.AddHostedService<StoreInitializer>();
        if (storeProvider == JobStoreProvider.Postgres) services.AddHostedService(sp => sp.GetRequiredService<PostgresNotificationListener>());
        if (role.RunsWorker())
        {
            services.AddHostedService(sp => sp.GetRequiredService<EngineHost>());
            services.AddHostedService<StylizationWorker>();
        }
        services.AddHostedService<LeaseRecoveryService>();
        if (role.RunsApi())
        {
            services.AddHostedService<WebhookDispatcher>();
            services.AddHostedService<RetentionCleanupService>();
        }
        services.AddHostedService<StartupReport>();
        services.AddHostedService<RoleStartupReport>();

        services.AddStylizationEngine(config);

        services.AddProblemDetails(o => o.CustomizeProblemDetails = ProblemWriter.Customize);
        services.AddExceptionHandler<ApiExceptionHandler>();
        services.ConfigureHttpJsonOptions(o => ApiJson.Configure(o.SerializerOptions));
        services.AddAuthentication(ApiKeyAuthenticationHandler.SchemeName)
            .AddScheme<AuthenticationSchemeOptions, ApiKeyAuthenticationHandler>(ApiKeyAuthenticationHandler.SchemeName, null);
        services.AddAuthorization();
        services.AddRateLimiter(ConfigureRateLimiter);
        services.AddEndpointsApiExplorer();
        services.AddSwaggerGen(OpenApiSetup.Configure);
        return builder;
    }

    public static WebApplication Build(WebApplicationBuilder builder)
    {
        var app = builder.Build();
        app.UseExceptionHandler();
        app.UseStatusCodePages();
        app.Use(async (http, next) =>
        {
            // On starting: the exception handler clears the headers before it writes a 500 problem.
            http.Response.OnStarting(() =>
            {
                http.Response.Headers["X-Request-Id"] = http.TraceIdentifier;
                return Task.CompletedTask;
            });
            using (Serilog.Context.LogContext.PushProperty("RequestId", http.TraceIdentifier))
                await next(http);
        });
        app.UseSerilogRequestLogging(o => o.GetLevel = (http, _, ex) =>
            ex is not null || http.Response.StatusCode >= 500 ? LogEventLevel.Error
            // Polls, probes and scrapes would drown everything else at Information.
            : HttpMethods.IsGet(http.Request.Method) && http.Response.StatusCode < 400 ? LogEventLevel.Debug
            : LogEventLevel.Information);
        app.UseMiddleware<ProblemExceptionMiddleware>();
        var role = app.Services.GetRequiredService<HostRole>().Role;
        if (!role.RunsApi())
        {
            // Worker: health, readiness and metrics only.
            HealthEndpoints.Map(app);
            return app;
        }
        app.UseMiddleware<LoopbackOnlyWhenOpenMiddleware>();
        app.UseSwagger();
        app.UseSwaggerUI(o =>
        {
            o.SwaggerEndpoint("/swagger/v1/swagger.json", "OmniConsistency v1");
            o.DocumentTitle = "OmniConsistency API";
        });
        app.UseAuthentication();
        app.UseAuthorization();
        app.UseRateLimiter();

        var v1 = app.MapGroup("/v1").RequireAuthorization().RequireRateLimiting(PerKeyPolicy).WithTags("Stylizations");
        StylizationEndpoints.Map(v1);
        StyleEndpoints.Map(app.MapGroup("/v1").RequireAuthorization().RequireRateLimiting(PerKeyPolicy).WithTags("Styles"));
        InfoEndpoints.Map(app.MapGroup("/v1").RequireAuthorization().RequireRateLimiting(PerKeyPolicy).WithTags("Service"));
        HealthEndpoints.Map(app);
        app.MapGet("/", () => Results.Redirect("/swagger")).ExcludeFromDescription();
        return app;
    }

    private static OptionsBuilder<T> AddOptions<T>(IServiceCollection services, string section) where T : class =>
        services.AddOptions<T>().BindConfiguration(section).ValidateDataAnnotations().ValidateOnStart();

    private static bool IsValidSecret(string secret)
    {
        try { WebhookSigner.DecodeSecret(secret); return true; }
        catch (FormatException) { return false; }
    }

    private static bool IsSha256Hex(string? s) => s is { Length: 64 } && s.All(char.IsAsciiHexDigit);

    private const string PerKeyPolicy = "per-key";

    private static void ConfigureRateLimiter(RateLimiterOptions o)
    {
        o.RejectionStatusCode = 429;
        o.AddPolicy(PerKeyPolicy, http =>
        {
            var owner = http.Owner();
            var registry = http.RequestServices.GetRequiredService<ApiKeyRegistry>();
            var permits = registry.ByName(owner)?.PermitsPerMinute ?? http.RequestServices.GetRequiredService<IOptions<RateLimitOptions>>().Value.PermitsPerMinute;
            // The partition is the key (or the client address when the service runs open).
            var partition = owner != "" ? "key:" + owner : "ip:" + http.Connection.RemoteIpAddress;
            return RateLimitPartition.GetTokenBucketLimiter(partition, _ => new TokenBucketRateLimiterOptions
            {
                TokenLimit = permits,
                TokensPerPeriod = Math.Max(1, permits / 60),
                ReplenishmentPeriod = permits >= 60 ? TimeSpan.FromSeconds(1) : TimeSpan.FromSeconds(60.0 / permits),
                QueueLimit = 0,
                AutoReplenishment = true,
            });
        });
        o.OnRejected = async (context, _) =>
        {
            var retry = context.Lease.TryGetMetadata(MetadataName.RetryAfter, out var ra) ? ra : TimeSpan.FromSeconds(1);
            context.HttpContext.RequestServices.GetRequiredService<ServiceMetrics>().Rejected("rate-limited");
            await ProblemWriter.WriteAsync(context.HttpContext, 429, "rate-limited", "Too many requests",
                "This API key sent more requests than its rate limit allows.", retryAfter: retry);
        };
    }

    /// <summary>
    /// Without API keys the service is open, so it must not be reachable from other machines: every configured URL is
    /// rebound to 127.0.0.1 (and the middleware below refuses non-loopback peers in case Kestrel endpoints bypass this).
    /// </summary>
    private static void RestrictToLoopbackWhenOpen(WebApplicationBuilder builder)
    {
        var auth = builder.Configuration.GetSection(AuthOptions.Section).Get<AuthOptions>() ?? new AuthOptions();
        if (auth.ApiKeys.Count > 0) return;
        var urls = builder.Configuration[WebHostDefaults.ServerUrlsKey];
        if (string.IsNullOrWhiteSpace(urls))
        {
            // ASPNETCORE_HTTP_PORTS / HTTPS_PORTS (the container images' default) name ports on every interface.
            var ports = (builder.Configuration[WebHostDefaults.HttpPortsKey] ?? "").Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(p => $"http://127.0.0.1:{p}")
                .Concat((builder.Configuration[WebHostDefaults.HttpsPortsKey] ?? "").Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                    .Select(p => $"https://127.0.0.1:{p}"))
                .ToList();
            urls = ports.Count > 0 ? string.Join(';', ports) : "http://localhost:5000";
        }
        var rebound = urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(u =>
        {
            var schemeEnd = u.IndexOf("://", StringComparison.Ordinal);
            if (schemeEnd < 0) return u;
            var rest = u[(schemeEnd + 3)..];
            var portStart = rest.StartsWith('[') ? rest.IndexOf("]:", StringComparison.Ordinal) + 1 : rest.LastIndexOf(':');
            var host = portStart > 0 ? rest[..portStart] : rest.TrimEnd('/');
            var tail = portStart > 0 ? rest[portStart..] : "";
            var loopback = host is "localhost" or "[::1]" || (IPAddress.TryParse(host.Trim('[', ']'), out var ip) && IPAddress.IsLoopback(ip));
            return loopback ? u : u[..(schemeEnd + 3)] + "127.0.0.1" + tail;
        });
        builder.WebHost.UseUrls(string.Join(';', rebound));
    }
}
