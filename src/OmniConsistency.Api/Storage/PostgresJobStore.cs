using Microsoft.Extensions.Options;
using Npgsql;
using NpgsqlTypes;
using OmniConsistency.Api.Options;

namespace OmniConsistency.Api.Storage;

/// <summary>
/// The shared job store: PostgreSQL, used by any number of API and worker processes at once. Claims take the oldest
/// queued row with <c>FOR UPDATE SKIP LOCKED</c> (workers never wait on each other's rows), leases are renewed by the
/// worker's heartbeat and a job whose lease ran out is re-queued by whichever process runs recovery next. Every change
/// that another process may wait for sends a <c>NOTIFY</c> on <see cref="PostgresNotifications.Channel"/> inside its
/// transaction (delivered at commit), which <see cref="PostgresNotificationListener"/> turns into in-process signals.
/// Times are the callers' clocks (as with SQLite), so hosts must keep their clocks in sync (NTP); a lease is minutes,
/// skew is milliseconds.
/// </summary>
public sealed partial class PostgresJobStore : IJobStore
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly IJobTransitionEffects _effects;
    private readonly StorageOptions _storage;

    public PostgresJobStore(NpgsqlDataSource dataSource, IOptions<StorageOptions> storage, IJobTransitionEffects effects)
    {
        _dataSource = dataSource;
        _effects = effects;
        _storage = storage.Value;
    }

    /// <summary>Other processes hold leases too: a running job is re-queued only when its lease expires.</summary>
    public bool ExclusiveToThisProcess => false;

    public async Task InitializeAsync(CancellationToken ct) => await PostgresSchema.MigrateAsync(_dataSource, ct);

    /// <summary>
    /// One transaction's connection, plus writes nothing in the transaction reads back (events, outbox rows) and the
    /// notifications: those go to the server in one batch just before COMMIT, saving a round trip each.
    /// </summary>
    private sealed class Tx(NpgsqlConnection connection, NpgsqlTransaction transaction)
    {
        public NpgsqlConnection Connection { get; } = connection;
        public NpgsqlTransaction Transaction { get; } = transaction;
        public HashSet<string> Notices { get; } = [];
        public List<NpgsqlBatchCommand> Deferred { get; } = [];
        public void Notify(string payload) => Notices.Add(payload);

        public void Defer(string sql, params NpgsqlParameter[] args)
        {
            var command = new NpgsqlBatchCommand(sql);
            command.Parameters.AddRange(args);
            Deferred.Add(command);
        }
    }

    /// <summary>Runs <paramref name="work"/> in one READ COMMITTED transaction; a deadlock or serialization failure is retried.</summary>
    private async Task<T> WriteAsync<T>(Func<Tx, Task<T>> work, CancellationToken ct)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await using var conn = await _dataSource.OpenConnectionAsync(ct);
                await using var transaction = await conn.BeginTransactionAsync(ct);
                var tx = new Tx(conn, transaction);
                var result = await work(tx);
                if (tx.Notices.Count > 0)
                    tx.Defer("SELECT pg_notify(@c, p) FROM unnest(@ps) AS p",
                        Text("c", PostgresNotifications.Channel), new NpgsqlParameter("ps", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = tx.Notices.ToArray() });
                if (tx.Deferred.Count > 0)
                {
                    await using var batch = new NpgsqlBatch(conn, transaction);
                    foreach (var command in tx.Deferred) batch.BatchCommands.Add(command);
                    await batch.ExecuteNonQueryAsync(ct);
                }
                await transaction.CommitAsync(ct);
                return result;
            }
            catch (PostgresException e) when (attempt < 3 && e.SqlState is PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.SerializationFailure)
            {
                // The transaction was rolled back whole; run it again.
            }
        }
    }

    /// <summary>No explicit transaction: reads, and single statements that commit on their own.</summary>
    private async Task<T> OnConnectionAsync<T>(Func<NpgsqlConnection, Task<T>> work, CancellationToken ct)
    {
        await using var conn = await _dataSource.OpenConnectionAsync(ct);
        return await work(conn);
    }

    // ---- command helpers ----

    private static NpgsqlCommand Cmd(Tx tx, string sql, params NpgsqlParameter[] args) => Cmd(tx.Connection, tx.Transaction, sql, args);

    private static NpgsqlCommand Cmd(NpgsqlConnection conn, NpgsqlTransaction? tx, string sql, params NpgsqlParameter[] args)
    {
        var cmd = new NpgsqlCommand(sql, conn, tx);
        cmd.Parameters.AddRange(args);
        return cmd;
    }

    private static async Task<int> ExecAsync(Tx tx, string sql, params NpgsqlParameter[] args)
    {
        await using var cmd = Cmd(tx, sql, args);
        return await cmd.ExecuteNonQueryAsync();
    }

    private static async Task<object?> ScalarAsync(NpgsqlConnection conn, NpgsqlTransaction? tx, string sql, params NpgsqlParameter[] args)
    {
        await using var cmd = Cmd(conn, tx, sql, args);
        var v = await cmd.ExecuteScalarAsync();
        return v is DBNull ? null : v;
    }

    private static NpgsqlParameter Text(string name, string? value) => new(name, NpgsqlDbType.Text) { Value = (object?)value ?? DBNull.Value };
    private static NpgsqlParameter Json(string name, string? value) => new(name, NpgsqlDbType.Jsonb) { Value = (object?)value ?? DBNull.Value };
    private static NpgsqlParameter Int(string name, int? value) => new(name, NpgsqlDbType.Integer) { Value = (object?)value ?? DBNull.Value };
    private static NpgsqlParameter Long(string name, long? value) => new(name, NpgsqlDbType.Bigint) { Value = (object?)value ?? DBNull.Value };
    private static NpgsqlParameter Bool(string name, bool value) => new(name, NpgsqlDbType.Boolean) { Value = value };
    private static NpgsqlParameter TextArray(string name, IEnumerable<string> value) => new(name, NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = value.ToArray() };

    /// <summary>timestamptz parameters must be UTC for Npgsql.</summary>
    private static NpgsqlParameter Time(string name, DateTimeOffset? value) =>
        new(name, NpgsqlDbType.TimestampTz) { Value = value is { } t ? t.ToUniversalTime() : DBNull.Value };

    // timestamptz, boolean and text[] columns.
    private static readonly StoreRows Rows = new(
        (r, i) => r.GetFieldValue<DateTimeOffset>(i), (r, i) => r.GetBoolean(i), (r, i) => r.GetFieldValue<string[]>(i));
    private static string? StrOrNull(NpgsqlDataReader r, int i) => StoreRows.StrOrNull(r, i);

    /// <summary>Runs a statement that returns job rows (SELECT, or UPDATE/INSERT ... RETURNING) and reads them.</summary>
    private static async Task<List<JobRecord>> JobsAsync(NpgsqlConnection conn, NpgsqlTransaction? tx, string sql, params NpgsqlParameter[] args)
    {
        await using var cmd = Cmd(conn, tx, sql, args);
        await using var r = await cmd.ExecuteReaderAsync();
        var list = new List<JobRecord>();
        while (await r.ReadAsync()) list.Add(ReadJob(r));
        return list;
    }

    private static async Task<JobRecord?> JobAsync(Tx tx, string sql, params NpgsqlParameter[] args) =>
        (await JobsAsync(tx.Connection, tx.Transaction, sql, args)).SingleOrDefault();

    private static JobRecord ReadJob(NpgsqlDataReader r) => Rows.Job(r);

    private static async Task<JobRecord?> FindJobAsync(NpgsqlConnection conn, NpgsqlTransaction? tx, string id, bool forUpdate = false)
    {
        var found = await JobsAsync(conn, tx, $"SELECT {StoreRows.JobColumns()} FROM jobs WHERE id = @id{(forUpdate ? " FOR UPDATE" : "")}", Text("id", id));
        return found.SingleOrDefault();
    }

    /// <summary>Writes a transition's event and webhook messages in the caller's transaction, and wakes waiters on the job.</summary>
    private void ApplyEffects(Tx tx, JobRecord job, JobTransition transition, DateTimeOffset now)
    {
        var effects = _effects.For(job, transition, now);
        AppendEvent(tx, job.Id, effects.EventType, effects.EventData, now);
        foreach (var m in effects.Webhooks)
        {
            tx.Defer(
                "INSERT INTO webhook_deliveries (id, job_id, event_type, url, payload, status, attempts, created_at, next_attempt_at) " +
                "VALUES (@id, @job, @ev, @url, @payload, 'pending', 0, @created, @created)",
                Text("id", m.Id), Text("job", m.JobId), Text("ev", m.EventType), Text("url", m.Url), Text("payload", m.Payload), Time("created", m.CreatedAt));
        }
        tx.Notify(PostgresNotifications.JobChanged(job.Id));
    }

    private static void AppendEvent(Tx tx, string jobId, string type, string data, DateTimeOffset now) =>
        tx.Defer("INSERT INTO job_events (job_id, type, data, created_at) VALUES (@j, @t, @d, @c)",
            Text("j", jobId), Text("t", type), Text("d", data), Time("c", now));
}
