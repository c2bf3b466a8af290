using Serilog.Core;
using Serilog.Events;

namespace OmniConsistency.Api.Observability;

/// <summary>
/// Adds "Correlation" = " (request X, job Y)" to events that carry a RequestId and/or JobId, so the text console
/// shows them on every line; JSON output has the individual properties anyway.
/// </summary>
public sealed class CorrelationEnricher : ILogEventEnricher
{
    public void Enrich(LogEvent logEvent, ILogEventPropertyFactory factory)
    {
        var parts = new List<string>(2);
        if (logEvent.Properties.TryGetValue("RequestId", out var request) && request is ScalarValue { Value: string r }) parts.Add("request " + r);
        if (logEvent.Properties.TryGetValue("JobId", out var job) && job is ScalarValue { Value: string j }) parts.Add("job " + j);
        if (parts.Count > 0) logEvent.AddPropertyIfAbsent(factory.CreateProperty("Correlation", $" ({string.Join(", ", parts)})"));
    }
}
