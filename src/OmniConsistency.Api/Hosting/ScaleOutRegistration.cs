using Npgsql;
using OmniConsistency.Api.Engine;
using OmniConsistency.Api.Options;
using OmniConsistency.Api.Storage;

namespace OmniConsistency.Api.Hosting;

/// <summary>This process's role, for the parts that decide at run time (endpoints, readiness).</summary>
public sealed record HostRole(ServiceRole Role);

/// <summary>
/// Registers what the configuration asks for: the job store (SQLite or PostgreSQL with its notification listener),
/// the blob store (folder or S3) and the catalog the API validates submissions against. Combinations that cannot
/// work (an api or worker role on the single-process SQLite store, PostgreSQL without a connection string, API
/// replicas that would each invent their own webhook secret, incomplete S3 settings) stop the start with a message.
/// </summary>
public static class ScaleOutRegistration
{
    /// <summary><c>--role worker</c> on the command line sets <see cref="RoleOptions.Key"/>.</summary>
    public static readonly IDictionary<string, string> CommandLineSwitches = new Dictionary<string, string> { ["--role"] = RoleOptions.Key };

    public const string ConnectionStringName = "Jobs";

    public static string? PostgresConnectionString(IConfiguration configuration, StorageOptions storage) =>
        string.IsNullOrWhiteSpace(storage.PostgresConnectionString) ? configuration.GetConnectionString(ConnectionStringName) : storage.PostgresConnectionString;

    /// <summary>Every problem with the scale-out settings, one sentence each.</summary>
    public static IEnumerable<string> ConfigurationProblems(IConfiguration configuration, ServiceRole role)
    {
        var storage = Bind<StorageOptions>(configuration, StorageOptions.Section);
        var blobs = Bind<BlobOptions>(configuration, BlobOptions.Section);
        if (role != ServiceRole.All && storage.Provider == JobStoreProvider.Sqlite)
            yield return $"{RoleOptions.Key}={role.ToString().ToLowerInvariant()} needs the shared job store: set Omni:Storage:Provider=postgres " +
                         "(the SQLite store belongs to one process, which then runs --role all).";
        if (storage.Provider == JobStoreProvider.Postgres)
        {
            var cs = PostgresConnectionString(configuration, storage);
            if (string.IsNullOrWhiteSpace(cs))
                yield return $"Omni:Storage:Provider=postgres needs Omni:Storage:PostgresConnectionString or ConnectionStrings:{ConnectionStringName}.";
            else if (ConnectionStringError(cs) is { } error)
                yield return $"The PostgreSQL connection string is not valid: {error}";
            if (role.RunsApi() && string.IsNullOrWhiteSpace(configuration["Omni:Webhooks:Secret"]))
                yield return "With Omni:Storage:Provider=postgres set Omni:Webhooks:Secret: every API replica must sign webhooks with the same secret.";
        }
        if (blobs.Provider == BlobProvider.S3)
            foreach (var p in S3BlobStore.Validate(blobs.S3)) yield return p;
    }

    private static string? ConnectionStringError(string cs)
    {
        try { _ = new NpgsqlConnectionStringBuilder(cs); return null; }
        catch (ArgumentException e) { return e.Message; }
    }

    private static T Bind<T>(IConfiguration configuration, string section) where T : new() =>
        configuration.GetSection(section).Get<T>() ?? new T();

    /// <summary>Registers stores and catalog; returns the job store provider (the caller adds its hosted services in order).</summary>
    public static JobStoreProvider AddScaleOutServices(this IServiceCollection services, IConfiguration configuration, ServiceRole role)
    {
        var problems = ConfigurationProblems(configuration, role).ToList();
        if (problems.Count > 0) throw new InvalidOperationException("Invalid configuration: " + string.Join(" ", problems));
        services.AddSingleton(new HostRole(role));

        var storage = Bind<StorageOptions>(configuration, StorageOptions.Section);
        if (storage.Provider == JobStoreProvider.Postgres)
        {
            var cs = PostgresConnectionString(configuration, storage)!;
            services.AddSingleton(sp =>
            {
                var builder = new NpgsqlDataSourceBuilder(cs);
                // Names the connections in pg_stat_activity by role.
                if (string.IsNullOrEmpty(builder.ConnectionStringBuilder.ApplicationName))
                    builder.ConnectionStringBuilder.ApplicationName = "omniconsistency-" + role.ToString().ToLowerInvariant();
                builder.UseLoggerFactory(sp.GetRequiredService<ILoggerFactory>());
                return builder.Build();
            });
            services.AddSingleton<PostgresJobStore>();
            services.AddSingleton<IJobStore>(sp => sp.GetRequiredService<PostgresJobStore>());
            services.AddSingleton<PostgresNotificationListener>();
        }
        else
        {
            services.AddSingleton<SqliteJobStore>();
            services.AddSingleton<IJobStore>(sp => sp.GetRequiredService<SqliteJobStore>());
        }

        if (Bind<BlobOptions>(configuration, BlobOptions.Section).Provider == BlobProvider.S3)
        {
            services.AddSingleton<S3BlobStore>();
            services.AddSingleton<IBlobStore>(sp => sp.GetRequiredService<S3BlobStore>());
        }
        else services.AddSingleton<IBlobStore, FileBlobStore>();

        if (role == ServiceRole.Api)
        {
            services.AddSingleton<FolderCatalogSource>();
            services.AddSingleton<ISubmissionCatalogSource>(sp => sp.GetRequiredService<FolderCatalogSource>());
        }
        else services.AddSingleton<ISubmissionCatalogSource, EngineCatalogSource>();
        return storage.Provider;
    }
}
