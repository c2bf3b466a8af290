using Npgsql;

namespace OmniConsistency.Api.Storage;

/// <summary>
/// The PostgreSQL schema as numbered migrations. <see cref="MigrateAsync"/> runs at start in every process: under a
/// transaction-scoped advisory lock (so replicas starting together apply each step once), it creates
/// <c>schema_version</c>, applies the steps newer than the highest recorded version in order, and refuses a database
/// whose version is newer than this build knows (an older binary must not write to a newer schema).
/// Tables live in the connection's current schema (search_path), so one database can hold several deployments.
/// </summary>
public static class PostgresSchema
{
    public sealed record Migration(int Version, string Description, string Sql);

    /// <summary>Append only: a released step is never edited, a change is a new step.</summary>
    public static readonly IReadOnlyList<Migration> Migrations =
    [
        new(1, "jobs, job events, webhook outbox", """
            CREATE TABLE jobs (
              seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
              id text NOT NULL UNIQUE,
              owner text NOT NULL,
              status text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
              parameters jsonb NOT NULL,
              input_blob text NOT NULL,
              idempotency_key text,
              request_hash text,
              webhook_url text,
              webhook_events text[] NOT NULL DEFAULT '{}',
              base_url text NOT NULL,
              created_at timestamptz NOT NULL,
              started_at timestamptz,
              finished_at timestamptz,
              attempts integer NOT NULL DEFAULT 0,
              lease_owner text,
              lease_expires_at timestamptz,
              cancel_requested boolean NOT NULL DEFAULT false,
              progress_phase text,
              progress_step integer,
              progress_total integer,
              result jsonb,
              result_expires_at timestamptz,
              result_expired boolean NOT NULL DEFAULT false,
              error jsonb,
              queue_wait_ms bigint,
              inference_ms bigint
            );
            CREATE UNIQUE INDEX ix_jobs_idempotency ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
            CREATE INDEX ix_jobs_status ON jobs (status);
            CREATE INDEX ix_jobs_queued ON jobs (seq) WHERE status = 'queued';
            CREATE INDEX ix_jobs_running_lease ON jobs (lease_expires_at) WHERE status = 'running';
            CREATE INDEX ix_jobs_finished ON jobs (finished_at) WHERE status IN ('succeeded', 'failed', 'canceled');
            CREATE INDEX ix_jobs_result_expiry ON jobs (result_expires_at) WHERE NOT result_expired;

            CREATE TABLE job_events (
              seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
              job_id text NOT NULL,
              type text NOT NULL,
              data text NOT NULL,
              created_at timestamptz NOT NULL
            );
            CREATE INDEX ix_job_events_job ON job_events (job_id, seq);

            CREATE TABLE webhook_deliveries (
              id text PRIMARY KEY,
              job_id text NOT NULL,
              event_type text NOT NULL,
              url text NOT NULL,
              payload text NOT NULL,
              status text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
              attempts integer NOT NULL DEFAULT 0,
              created_at timestamptz NOT NULL,
              next_attempt_at timestamptz NOT NULL,
              lease_owner text,
              lease_expires_at timestamptz,
              last_status_code integer,
              last_error text,
              delivered_at timestamptz
            );
            CREATE INDEX ix_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
            CREATE INDEX ix_deliveries_job ON webhook_deliveries (job_id);
            """),
        new(2, "owner's job list index (GET /v1/stylizations, newest first)", """
            CREATE INDEX ix_jobs_owner_created ON jobs (owner, created_at, id);
            """),
    ];

    public static int LatestVersion => Migrations[^1].Version;

    /// <summary>Brings the schema to <see cref="LatestVersion"/>; returns the version found before.</summary>
    public static async Task<int> MigrateAsync(NpgsqlDataSource dataSource, CancellationToken ct)
    {
        await using var conn = await dataSource.OpenConnectionAsync(ct);
        await using var tx = await conn.BeginTransactionAsync(ct);
        // One migrator per schema at a time; the lock is released with the transaction.
        await ExecAsync(conn, tx, "SELECT pg_advisory_xact_lock(hashtext('omni.schema.' || COALESCE(current_schema(), '')))", ct);
        var schema = await ScalarAsync(conn, tx, "SELECT current_schema()", ct) as string
                     ?? throw new InvalidOperationException(
                         "The PostgreSQL connection has no current schema: the schemas in its search_path do not exist (create the schema or fix 'Search Path').");
        await ExecAsync(conn, tx, """
            CREATE TABLE IF NOT EXISTS schema_version (
              version integer PRIMARY KEY,
              description text NOT NULL,
              applied_at timestamptz NOT NULL DEFAULT now()
            )
            """, ct);
        var found = Convert.ToInt32(await ScalarAsync(conn, tx, "SELECT COALESCE(MAX(version), 0) FROM schema_version", ct));
        if (found > LatestVersion)
            throw new InvalidOperationException(
                $"The job database (schema '{schema}') is at schema version {found}, newer than this build knows ({LatestVersion}): run a newer release of the service.");
        foreach (var m in Migrations.Where(m => m.Version > found))
        {
            await ExecAsync(conn, tx, m.Sql, ct);
            await using var record = new NpgsqlCommand("INSERT INTO schema_version (version, description) VALUES (@v, @d)", conn, tx);
            record.Parameters.AddWithValue("v", m.Version);
            record.Parameters.AddWithValue("d", m.Description);
            await record.ExecuteNonQueryAsync(ct);
        }
        await tx.CommitAsync(ct);
        return found;
    }

    private static async Task ExecAsync(NpgsqlConnection conn, NpgsqlTransaction tx, string sql, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand(sql, conn, tx);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    private static async Task<object?> ScalarAsync(NpgsqlConnection conn, NpgsqlTransaction tx, string sql, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand(sql, conn, tx);
        var v = await cmd.ExecuteScalarAsync(ct);
        return v is DBNull ? null : v;
    }
}
