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

    private static DateTimeOffset At(NpgsqlDataReader r, int i) => r.GetFieldValue<DateTimeOffset>(i);
    private static DateTimeOffset? AtOrNull(NpgsqlDataReader r, int i) => r.IsDBNull(i) ? null : r.GetFieldValue<DateTimeOffset>(i);
    private static string? StrOrNull(NpgsqlDataReader r, int i) => r.IsDBNull(i) ? null : r.GetString(i);
    private static long? LongOrNull(NpgsqlDataReader r, int i) => r.IsDBNull(i) ? null : r.GetInt64(i);

    private static readonly string[] JobColumnNames =
    [
        "id", "seq", "owner", "status", "parameters", "input_blob", "webhook_url", "webhook_events", "base_url", "created_at", "started_at",
        "finished_at", "attempts", "lease_owner", "lease_expires_at", "cancel_requested", "progress_phase", "progress_step", "progress_total",
        "result", "result_expired", "error", "queue_wait_ms", "inference_ms", "result_expires_at",
    ];

    /// <summary>The columns <see cref="ReadJob"/> reads, in its order (qualified with <paramref name="alias"/> where a join makes names ambiguous).</summary>
    private static string JobColumns(string? alias = null) => string.Join(", ", JobColumnNames.Select(c => alias is null ? c : alias + "." + c));

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

    private static JobRecord ReadJob(NpgsqlDataReader r) => new()
    {
        Id = r.GetString(0),
        Seq = r.GetInt64(1),
        Owner = r.GetString(2),
        Status = JobStatusNames.Parse(r.GetString(3)),
        Parameters = StoreJson.Read<JobParameters>(r.GetString(4)),
        InputBlob = r.GetString(5),
        WebhookUrl = StrOrNull(r, 6),
        WebhookEvents = r.GetFieldValue<string[]>(7),
        BaseUrl = r.GetString(8),
        CreatedAt = At(r, 9),
        StartedAt = AtOrNull(r, 10),
        FinishedAt = AtOrNull(r, 11),
        Attempts = r.GetInt32(12),
        LeaseOwner = StrOrNull(r, 13),
        LeaseExpiresAt = AtOrNull(r, 14),
        CancelRequested = r.GetBoolean(15),
        Progress = r.IsDBNull(16) ? null : new JobProgress(r.GetString(16), r.GetInt32(17), r.GetInt32(18)),
        Result = r.IsDBNull(19) ? null : StoreJson.Read<JobResultInfo>(r.GetString(19)),
        ResultExpired = r.GetBoolean(20),
        Error = r.IsDBNull(21) ? null : StoreJson.Read<JobError>(r.GetString(21)),
        QueueWaitMs = LongOrNull(r, 22),
        InferenceMs = LongOrNull(r, 23),
        ResultExpiresAt = AtOrNull(r, 24),
    };

    private static async Task<JobRecord?> FindJobAsync(NpgsqlConnection conn, NpgsqlTransaction? tx, string id, bool forUpdate = false)
    {
        var found = await JobsAsync(conn, tx, $"SELECT {JobColumns()} FROM jobs WHERE id = @id{(forUpdate ? " FOR UPDATE" : "")}", Text("id", id));
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
