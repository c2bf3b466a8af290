using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using OmniConsistency.Api.Storage;

namespace OmniConsistency.Api.Observability;

/// <summary>
/// Counters the service keeps itself, written as Prometheus text by /metrics together with the store's job counts.
/// Counters of the engine are picked up from any System.Diagnostics.Metrics meter named "OmniConsistency.*"
/// (e.g. the LoRA cache's hits and misses) and exported as omni_&lt;instrument&gt;_total; its observable gauges
/// (e.g. lora_cache_bytes per tier) are read at each scrape and exported as omni_&lt;instrument&gt; with their tags as labels.
/// </summary>
public sealed class ServiceMetrics : IDisposable
{
    private long _stepCount;
    private long _stepMicros;
    private long _inferenceCount;
    private long _inferenceMicros;
    private long _queueWaitCount;
    private long _queueWaitMicros;
    private long _jobsDeleted;
    private readonly ConcurrentDictionary<string, long> _jobsFinished = new();
    private readonly ConcurrentDictionary<string, long> _webhookAttempts = new();
    private readonly ConcurrentDictionary<string, long> _rejections = new();
    private readonly ConcurrentDictionary<string, long> _meterCounters = new();
    private readonly MeterListener _listener = new();
    // Filled by the gauges' callbacks during one scrape (RecordObservableInstruments runs them on the scraping thread).
    private readonly SortedDictionary<string, SortedDictionary<string, double>> _gaugeValues = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string?> _gaugeHelp = new(StringComparer.Ordinal);
    private readonly Lock _scrapeGate = new();

    public ServiceMetrics()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (!instrument.Meter.Name.StartsWith("OmniConsistency", StringComparison.Ordinal) || !instrument.GetType().IsGenericType) return;
            var kind = instrument.GetType().GetGenericTypeDefinition();
            if (kind == typeof(Counter<>) || kind == typeof(ObservableGauge<>) || kind == typeof(ObservableUpDownCounter<>))
                listener.EnableMeasurementEvents(instrument);
        };
        _listener.SetMeasurementEventCallback<long>((inst, value, tags, _) => Measured(inst, value, tags));
        _listener.SetMeasurementEventCallback<int>((inst, value, tags, _) => Measured(inst, value, tags));
        _listener.SetMeasurementEventCallback<double>((inst, value, tags, _) => Measured(inst, value, tags));
        _listener.Start();
    }

    private void Measured(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (!instrument.IsObservable)
        {
            AddMeter(instrument.Name, (long)value);
            return;
        }
        // Only reached from RecordObservableInstruments inside ToPrometheus, which holds _scrapeGate.
        var name = "omni_" + Sanitize(instrument.Name);
        if (!_gaugeValues.TryGetValue(name, out var series)) _gaugeValues[name] = series = new(StringComparer.Ordinal);
        _gaugeHelp[name] = instrument.Description;
        series[Labels(tags)] = value;
    }

    private static string Labels(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var parts = new List<string>(tags.Length);
        foreach (var (key, tagValue) in tags)
        {
            var text = Convert.ToString(tagValue, CultureInfo.InvariantCulture) ?? "";
            parts.Add($"{Sanitize(key)}=\"{text.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n")}\"");
        }
        parts.Sort(StringComparer.Ordinal);
        return string.Join(",", parts);
    }

    private void AddMeter(string name, long value) => _meterCounters.AddOrUpdate(name, value, (_, v) => v + value);

    public void StepCompleted(TimeSpan duration)
    {
        Interlocked.Increment(ref _stepCount);
        Interlocked.Add(ref _stepMicros, (long)duration.TotalMicroseconds);
    }

    public void JobFinished(JobStatus status, TimeSpan? inference, TimeSpan? queueWait)
    {
        _jobsFinished.AddOrUpdate(status.ToWire(), 1, (_, v) => v + 1);
        if (inference is { } i && status == JobStatus.Succeeded)
        {
            Interlocked.Increment(ref _inferenceCount);
            Interlocked.Add(ref _inferenceMicros, (long)i.TotalMicroseconds);
        }
        if (queueWait is { } q)
        {
            Interlocked.Increment(ref _queueWaitCount);
            Interlocked.Add(ref _queueWaitMicros, (long)q.TotalMicroseconds);
        }
    }

    /// <summary>Mean inference time of succeeded jobs so far, if any (used to estimate Retry-After).</summary>
    public TimeSpan? MeanInferenceTime
    {
        get
        {
            var n = Interlocked.Read(ref _inferenceCount);
            return n == 0 ? null : TimeSpan.FromMicroseconds(Interlocked.Read(ref _inferenceMicros) / (double)n);
        }
    }

    public void JobDeleted() => Interlocked.Increment(ref _jobsDeleted);

    public void WebhookAttempt(string outcome) => _webhookAttempts.AddOrUpdate(outcome, 1, (_, v) => v + 1);

    public void Rejected(string reason) => _rejections.AddOrUpdate(reason, 1, (_, v) => v + 1);

    public string ToPrometheus(JobCounts counts, bool engineReady, int runningHere)
    {
        var sb = new StringBuilder();
        void Metric(string name, string type, string help)
        {
            sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            sb.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
        }
        void Sample(string name, double value, string? labels = null)
        {
            sb.Append(name);
            if (labels is not null) sb.Append('{').Append(labels).Append('}');
            sb.Append(' ').Append(value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
        }

        Metric("omni_queue_depth", "gauge", "Jobs waiting in the queue.");
        Sample("omni_queue_depth", counts.Queued);
        Metric("omni_jobs", "gauge", "Jobs in the store by state.");
        Sample("omni_jobs", counts.Queued, "state=\"queued\"");
        Sample("omni_jobs", counts.Running, "state=\"running\"");
        Sample("omni_jobs", counts.Succeeded, "state=\"succeeded\"");
        Sample("omni_jobs", counts.Failed, "state=\"failed\"");
        Sample("omni_jobs", counts.Canceled, "state=\"canceled\"");
        Metric("omni_jobs_running_here", "gauge", "Jobs running in this process.");
        Sample("omni_jobs_running_here", runningHere);
        Metric("omni_jobs_finished_total", "counter", "Jobs finished by this process, by final state.");
        foreach (var s in new[] { "succeeded", "failed", "canceled" })
            Sample("omni_jobs_finished_total", _jobsFinished.GetValueOrDefault(s), $"state=\"{s}\"");
        Metric("omni_jobs_deleted_total", "counter", "Finished jobs deleted by their owner (DELETE) through this process.");
        Sample("omni_jobs_deleted_total", Interlocked.Read(ref _jobsDeleted));
        Metric("omni_step_seconds", "summary", "Time per denoising step.");
        Sample("omni_step_seconds_sum", Interlocked.Read(ref _stepMicros) / 1e6);
        Sample("omni_step_seconds_count", Interlocked.Read(ref _stepCount));
        Metric("omni_inference_seconds", "summary", "Engine time of succeeded jobs.");
        Sample("omni_inference_seconds_sum", Interlocked.Read(ref _inferenceMicros) / 1e6);
        Sample("omni_inference_seconds_count", Interlocked.Read(ref _inferenceCount));
        Metric("omni_queue_wait_seconds", "summary", "Time jobs waited in the queue before starting.");
        Sample("omni_queue_wait_seconds_sum", Interlocked.Read(ref _queueWaitMicros) / 1e6);
        Sample("omni_queue_wait_seconds_count", Interlocked.Read(ref _queueWaitCount));
        Metric("omni_webhook_attempts_total", "counter", "Webhook delivery attempts by outcome.");
        foreach (var o in new[] { "delivered", "retry", "failed", "gone" })
            Sample("omni_webhook_attempts_total", _webhookAttempts.GetValueOrDefault(o), $"outcome=\"{o}\"");
        Metric("omni_requests_rejected_total", "counter", "Submissions refused, by reason.");
        foreach (var (reason, n) in _rejections.OrderBy(p => p.Key, StringComparer.Ordinal))
            Sample("omni_requests_rejected_total", n, $"reason=\"{reason}\"");
        Metric("omni_engine_ready", "gauge", "1 when the engine is loaded.");
        Sample("omni_engine_ready", engineReady ? 1 : 0);
        foreach (var (name, n) in _meterCounters.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            var metric = "omni_" + Sanitize(name) + "_total";
            Metric(metric, "counter", $"Engine counter {name}.");
            Sample(metric, n);
        }
        lock (_scrapeGate)
        {
            _gaugeValues.Clear();
            _listener.RecordObservableInstruments();
            foreach (var (metric, series) in _gaugeValues)
            {
                Metric(metric, "gauge", _gaugeHelp.GetValueOrDefault(metric) is { Length: > 0 } help ? help.ReplaceLineEndings(" ") : $"Engine gauge {metric}.");
                foreach (var (labels, value) in series) Sample(metric, value, labels.Length == 0 ? null : labels);
            }
        }
        return sb.ToString();
    }

    private static string Sanitize(string name)
    {
        var sb = new StringBuilder(name.Length);
        foreach (var c in name) sb.Append(char.IsAsciiLetterOrDigit(c) ? char.ToLowerInvariant(c) : '_');
        return sb.ToString();
    }

    public void Dispose() => _listener.Dispose();
}
