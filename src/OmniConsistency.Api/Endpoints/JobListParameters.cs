using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.OpenApi;
using OmniConsistency.Api.Jobs;
using OmniConsistency.Api.Storage;
using Swashbuckle.AspNetCore.SwaggerGen;

namespace OmniConsistency.Api.Endpoints;

/// <summary>
/// The query of GET /v1/stylizations: <c>status</c> (repeatable or a comma list), <c>limit</c> (1-100, default 20) and
/// <c>cursor</c>. Unknown parameters are refused like unknown submit fields, so a typo never silently lists everything.
/// </summary>
public sealed record JobListParameters(IReadOnlyList<JobStatus> Statuses, int Limit, JobListCursor? After)
{
    public const int DefaultLimit = 20;
    public const int MaxLimit = 100;
    public const string OperationId = "ListStylizations";

    private static readonly string[] Known = ["status", "limit", "cursor"];
    private static readonly JobStatus[] AllStatuses = Enum.GetValues<JobStatus>();
    private static readonly string StatusNames = string.Join(", ", AllStatuses.Select(s => s.ToWire()));

    /// <summary>The parameters, or a 400 validation-error naming every bad one.</summary>
    public static JobListParameters Read(IQueryCollection query)
    {
        var errors = new Dictionary<string, string[]>();
        foreach (var key in query.Keys.Where(k => !Known.Contains(k, StringComparer.OrdinalIgnoreCase)))
            errors[key] = ["Unknown query parameter: this list takes status, limit and cursor."];

        var statuses = new List<JobStatus>();
        if (query.TryGetValue("status", out var statusValues))
        {
            var names = statusValues.SelectMany(v => (v ?? "").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)).ToList();
            var unknown = names.Where(n => !AllStatuses.Any(s => s.ToWire() == n)).ToList();
            if (names.Count == 0) errors["status"] = [$"Give one or more of {StatusNames}."];
            else if (unknown.Count > 0) errors["status"] = [$"Unknown status {string.Join(", ", unknown.Select(u => $"'{u}'"))}: use {StatusNames}."];
            else statuses.AddRange(AllStatuses.Where(s => names.Contains(s.ToWire())));
        }

        var limit = DefaultLimit;
        if (query.TryGetValue("limit", out var limitValues))
        {
            if (limitValues.Count != 1 ||
                !int.TryParse(limitValues[0], NumberStyles.None, CultureInfo.InvariantCulture, out limit) || limit is < 1 or > MaxLimit)
                errors["limit"] = [$"limit must be one whole number from 1 to {MaxLimit} (default {DefaultLimit})."];
        }

        JobListCursor? after = null;
        if (query.TryGetValue("cursor", out var cursorValues) &&
            (cursorValues.Count != 1 || !JobListCursors.TryDecode(cursorValues[0] ?? "", out after)))
            errors["cursor"] = ["Not a cursor of this list: pass nextCursor from the previous page (or follow its next URL)."];

        if (errors.Count > 0)
            throw new ApiProblemException(400, "validation-error", "Invalid query",
                "One or more query parameters are invalid: " + string.Join("; ", errors.Select(e => $"{e.Key}: {string.Join(" ", e.Value)}")), errors);
        return new JobListParameters(statuses, limit, after);
    }

    /// <summary>The URL of the page after <paramref name="cursor"/> with the same filter and limit.</summary>
    public string NextUrl(string baseUrl, string cursor)
    {
        var status = Statuses.Count > 0 ? "status=" + string.Join(",", Statuses.Select(s => s.ToWire())) + "&" : "";
        return $"{baseUrl.TrimEnd('/')}/v1/stylizations?{status}limit={Limit.ToString(CultureInfo.InvariantCulture)}&cursor={Uri.EscapeDataString(cursor)}";
    }

    /// <summary>The query parameters in Swagger (the endpoint reads them itself to answer problems with per-field errors).</summary>
    public sealed class OperationFilter : IOperationFilter
    {
        public void Apply(OpenApiOperation operation, OperationFilterContext context)
        {
            if (operation.OperationId != OperationId) return;
            operation.Parameters ??= [];
            operation.Parameters.Add(new OpenApiParameter
            {
                Name = "status", In = ParameterLocation.Query, Required = false, Style = ParameterStyle.Form, Explode = true,
                Description = "Only jobs in these states: repeat the parameter or give a comma-separated list.",
                Schema = new OpenApiSchema
                {
                    Type = JsonSchemaType.Array,
                    Items = new OpenApiSchema { Type = JsonSchemaType.String, Enum = AllStatuses.Select(s => (JsonNode)JsonValue.Create(s.ToWire())).ToList() },
                },
            });
            operation.Parameters.Add(new OpenApiParameter
            {
                Name = "limit", In = ParameterLocation.Query, Required = false, Description = $"Jobs per page, 1-{MaxLimit} (default {DefaultLimit}).",
                Schema = new OpenApiSchema
                {
                    Type = JsonSchemaType.Integer, Format = "int32", Minimum = "1", Maximum = MaxLimit.ToString(CultureInfo.InvariantCulture),
                    Default = JsonValue.Create(DefaultLimit),
                },
            });
            operation.Parameters.Add(new OpenApiParameter
            {
                Name = "cursor", In = ParameterLocation.Query, Required = false,
                Description = "`nextCursor` of the previous page (opaque). Pages stay stable while new jobs arrive: those come first, on a fresh first page.",
                Schema = new OpenApiSchema { Type = JsonSchemaType.String },
            });
        }
    }
}
