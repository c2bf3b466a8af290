using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Options;
using OmniConsistency.Api.Options;

namespace OmniConsistency.Api.Storage;

/// <summary>
/// The embedded job store: one SQLite file in WAL mode. Writes are serialised in-process (one writer is all SQLite
/// allows anyway; queueing here avoids busy retries), reads run concurrently. One process owns the file, which is
/// why <see cref="RecoverAsync"/> may be asked at start to re-queue every running job.
/// </summary>
public sealed partial class SqliteJobStore : IJobStore, IDisposable
{
    private readonly string _connectionString;
    private readonly IJobTransitionEffects _effects;
    private readonly StorageOptions _storage;
    private readonly SemaphoreSlim _writeLock = new(1, 1);

    public SqliteJobStore(IOptions<StorageOptions> storage, IJobTransitionEffects effects)
    {
        _storage = storage.Value;
        _effects = effects;
        var dbPath = _storage.DatabasePath;
        Directory.CreateDirectory(Path.GetDirectoryName(dbPath)!);
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = dbPath,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = true,
            DefaultTimeout = 30,
        }.ToString();
    }

    private const string Schema = """
        CREATE TABLE IF NOT EXISTS jobs (
          seq INTEGER PRIMARY KEY AUTOINCREMENT,
          id TEXT NOT NULL UNIQUE,
          owner TEXT NOT NULL,
          status TEXT NOT NULL,
          parameters TEXT NOT NULL,
          input_blob TEXT NOT NULL,
          idempotency_key TEXT,
          request_hash TEXT,
          webhook_url TEXT,
          webhook_events TEXT NOT NULL DEFAULT '',
          base_url TEXT NOT NULL,
          created_at INTEGER NOT NULL,
          started_at INTEGER,
          finished_at INTEGER,
          attempts INTEGER NOT NULL DEFAULT 0,
          lease_owner TEXT,
          lease_expires_at INTEGER,
          cancel_requested INTEGER NOT NULL DEFAULT 0,
          progress_phase TEXT,
          progress_step INTEGER,
          progress_total INTEGER,
          result TEXT,
          result_expires_at INTEGER,
          result_expired INTEGER NOT NULL DEFAULT 0,
          error TEXT,
          queue_wait_ms INTEGER,
          inference_ms INTEGER
        );
        CREATE UNIQUE INDEX IF NOT EXISTS ix_jobs_idempotency ON jobs(owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
        CREATE INDEX IF NOT EXISTS ix_jobs_status ON jobs(status, seq);
        CREATE INDEX IF NOT EXISTS ix_jobs_result_expiry ON jobs(result_expired, result_expires_at);
        CREATE INDEX IF NOT EXISTS ix_jobs_owner_created ON jobs(owner, created_at, id);
        CREATE TABLE IF NOT EXISTS job_events (
          seq INTEGER PRIMARY KEY AUTOINCREMENT,
          job_id TEXT NOT NULL,
          type TEXT NOT NULL,
          data TEXT NOT NULL,
          created_at INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS ix_job_events_job ON job_events(job_id, seq);
        CREATE TABLE IF NOT EXISTS webhook_deliveries (
          id TEXT PRIMARY KEY,
          job_id TEXT NOT NULL,
          event_type TEXT NOT NULL,
          url TEXT NOT NULL,
          payload TEXT NOT NULL,
          status TEXT NOT NULL,
          attempts INTEGER NOT NULL DEFAULT 0,
          created_at INTEGER NOT NULL,
          next_attempt_at INTEGER NOT NULL,
          lease_owner TEXT,
          lease_expires_at INTEGER,
          last_status_code INTEGER,
          last_error TEXT,
          delivered_at INTEGER
        );
        CREATE INDEX IF NOT EXISTS ix_deliveries_due ON webhook_deliveries(status, next_attempt_at);
        CREATE INDEX IF NOT EXISTS ix_deliveries_job ON webhook_deliveries(job_id);
        """;

    public bool ExclusiveToThisProcess => true;

    public async Task InitializeAsync(CancellationToken ct)
    {
        await using var conn = await OpenAsync(ct);
        // WAL: readers never block the writer; the setting persists in the file.
        Exec(conn, null, "PRAGMA journal_mode=WAL;");
        Exec(conn, null, Schema);
    }

    public void Dispose()
    {
        _writeLock.Dispose();
        using var conn = new SqliteConnection(_connectionString);
        SqliteConnection.ClearPool(conn); // close this file's pooled connections (a restarted host reopens it)
    }

    private async Task<SqliteConnection> OpenAsync(CancellationToken ct)
    {
        var conn = new SqliteConnection(_connectionString);
        await conn.OpenAsync(ct);
        return conn;
    }

    /// <summary>Runs <paramref name="work"/> in one IMMEDIATE transaction under the in-process write lock.</summary>
    private async Task<T> WriteAsync<T>(Func<SqliteConnection, SqliteTransaction, T> work, CancellationToken ct)
    {
        await _writeLock.WaitAsync(ct);
        try
        {
            await using var conn = await OpenAsync(ct);
            using var tx = conn.BeginTransaction(deferred: false);
            var result = work(conn, tx);
            tx.Commit();
            return result;
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async Task<T> ReadAsync<T>(Func<SqliteConnection, T> work, CancellationToken ct)
    {
        await using var conn = await OpenAsync(ct);
        return work(conn);
    }

    // ---- command helpers ----

    private static SqliteCommand Cmd(SqliteConnection conn, SqliteTransaction? tx, string sql, params (string Name, object? Value)[] args)
    {
        var cmd = conn.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = sql;
        foreach (var (name, value) in args) cmd.Parameters.AddWithValue(name, value ?? DBNull.Value);
        return cmd;
    }

    private static int Exec(SqliteConnection conn, SqliteTransaction? tx, string sql, params (string, object?)[] args)
    {
        using var cmd = Cmd(conn, tx, sql, args);
        return cmd.ExecuteNonQuery();
    }

    private static object? Scalar(SqliteConnection conn, SqliteTransaction? tx, string sql, params (string, object?)[] args)
    {
        using var cmd = Cmd(conn, tx, sql, args);
        var v = cmd.ExecuteScalar();
        return v is DBNull ? null : v;
    }

    private static long Ms(DateTimeOffset t) => t.ToUnixTimeMilliseconds();
    private static DateTimeOffset At(long ms) => DateTimeOffset.FromUnixTimeMilliseconds(ms);
    private static string? StrOrNull(SqliteDataReader r, int i) => StoreRows.StrOrNull(r, i);
    // Unix milliseconds, 0/1 integers and comma-separated text.
    private static readonly StoreRows Rows = new(
        (r, i) => At(r.GetInt64(i)), (r, i) => r.GetInt64(i) != 0, (r, i) => r.GetString(i).Split(',', StringSplitOptions.RemoveEmptyEntries));

    private static JobRecord ReadJob(SqliteDataReader r) => Rows.Job(r);

    private static JobRecord? FindJob(SqliteConnection conn, SqliteTransaction? tx, string id)
    {
        using var cmd = Cmd(conn, tx, $"SELECT {StoreRows.JobColumns()} FROM jobs WHERE id = $id", ("$id", id));
        using var r = cmd.ExecuteReader();
        return r.Read() ? ReadJob(r) : null;
    }

    private static JobRecord LoadJob(SqliteConnection conn, SqliteTransaction tx, string id) =>
        FindJob(conn, tx, id) ?? throw new InvalidOperationException($"Job {id} vanished inside a transaction.");

    /// <summary>Writes a transition's event and webhook messages in the caller's transaction.</summary>
    private void ApplyEffects(SqliteConnection conn, SqliteTransaction tx, JobRecord job, JobTransition transition, DateTimeOffset now)
    {
        var effects = _effects.For(job, transition, now);
        AppendEvent(conn, tx, job.Id, effects.EventType, effects.EventData, now);
        foreach (var m in effects.Webhooks)
        {
            Exec(conn, tx,
                "INSERT INTO webhook_deliveries (id, job_id, event_type, url, payload, status, attempts, created_at, next_attempt_at) " +
                "VALUES ($id, $job, $ev, $url, $payload, 'pending', 0, $created, $created)",
                ("$id", m.Id), ("$job", m.JobId), ("$ev", m.EventType), ("$url", m.Url), ("$payload", m.Payload), ("$created", Ms(m.CreatedAt)));
        }
    }

    private static void AppendEvent(SqliteConnection conn, SqliteTransaction tx, string jobId, string type, string data, DateTimeOffset now) =>
        Exec(conn, tx, "INSERT INTO job_events (job_id, type, data, created_at) VALUES ($j, $t, $d, $c)",
            ("$j", jobId), ("$t", type), ("$d", data), ("$c", Ms(now)));
}
