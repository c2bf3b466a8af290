using Npgsql;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// The PostgreSQL server the tests may use: OMNI_TEST_POSTGRES (an Npgsql connection string; .ci/setup starts a server
/// and sets it for .ci/run). Unset, every test that needs it is skipped with <see cref="SkipReason"/>. Each test works
/// in a schema of its own (<see cref="PostgresTestSchema"/>), so tests run in parallel and leave nothing behind.
/// </summary>
public static class TestPostgres
{
    public const string Variable = "OMNI_TEST_POSTGRES";

    public const string SkipReason =
        "Needs PostgreSQL: set " + Variable + " to an Npgsql connection string (.ci/setup starts a local server and sets it for .ci/run).";

    public static string? ConnectionString => Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } cs ? cs : null;

    public static string Require() => ConnectionString ?? throw Xunit.Sdk.SkipException.ForSkip(SkipReason);
}

/// <summary>A fresh schema for one test; <see cref="ConnectionString"/> has it as the search path. Dropped on dispose.</summary>
public sealed class PostgresTestSchema : IAsyncDisposable
{
    private readonly string _adminConnectionString;
    public string Schema { get; }
    public string ConnectionString { get; }

    private PostgresTestSchema(string admin, string schema)
    {
        _adminConnectionString = admin;
        Schema = schema;
        ConnectionString = new NpgsqlConnectionStringBuilder(admin) { SearchPath = schema }.ConnectionString;
    }

    public static async Task<PostgresTestSchema> CreateAsync()
    {
        var admin = TestPostgres.Require();
        var schema = "omni_test_" + Guid.NewGuid().ToString("N")[..16];
        await using var conn = new NpgsqlConnection(admin);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand($"CREATE SCHEMA {schema}", conn);
        await cmd.ExecuteNonQueryAsync();
        return new PostgresTestSchema(admin, schema);
    }

    public NpgsqlDataSource NewDataSource() => NpgsqlDataSource.Create(ConnectionString);

    public async Task<T> ScalarAsync<T>(string sql)
    {
        await using var conn = new NpgsqlConnection(ConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, conn);
        return (T)(await cmd.ExecuteScalarAsync())!;
    }

    /// <summary>The first column of the first row, or null when there is no row.</summary>
    public async Task<T?> ScalarOrNullAsync<T>(string sql) where T : class
    {
        await using var conn = new NpgsqlConnection(ConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, conn);
        return await cmd.ExecuteScalarAsync() as T;
    }

    public async Task ExecAsync(string sql)
    {
        await using var conn = new NpgsqlConnection(ConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, conn);
        await cmd.ExecuteNonQueryAsync();
    }

    public async ValueTask DisposeAsync()
    {
        NpgsqlConnection.ClearAllPools();
        await using var conn = new NpgsqlConnection(_adminConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand($"DROP SCHEMA IF EXISTS {Schema} CASCADE", conn);
        await cmd.ExecuteNonQueryAsync();
    }
}
