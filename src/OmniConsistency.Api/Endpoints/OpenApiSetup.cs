using System.Text.Json.Nodes;
using Microsoft.OpenApi;
using Swashbuckle.AspNetCore.SwaggerGen;

namespace OmniConsistency.Api.Endpoints;

/// <summary>Swagger UI at /swagger: API key schemes and a hand-written request body for the submit operation (file upload works from the UI).</summary>
public static class OpenApiSetup
{
    public static void Configure(SwaggerGenOptions o)
    {
        o.SwaggerDoc("v1", new OpenApiInfo
        {
            Title = "OmniConsistency API",
            Version = InfoEndpoints.ApiVersion,
            Description = "Stylize photos with FLUX.1-dev + OmniConsistency and style LoRAs. Submit a job, then poll it, stream its " +
                          "events (SSE) or receive signed webhooks (Standard Webhooks). Errors are RFC 9457 problem+json.",
        });
        o.AddSecurityDefinition("Bearer", new OpenApiSecurityScheme
        {
            Type = SecuritySchemeType.Http, Scheme = "bearer", Description = "API key as `Authorization: Bearer <key>`.",
        });
        o.AddSecurityDefinition("ApiKey", new OpenApiSecurityScheme
        {
            Type = SecuritySchemeType.ApiKey, In = ParameterLocation.Header, Name = "X-Api-Key", Description = "API key as `X-Api-Key: <key>`.",
        });
        o.AddSecurityRequirement(doc => new OpenApiSecurityRequirement
        {
            [new OpenApiSecuritySchemeReference("Bearer", doc)] = [],
        });
        o.AddSecurityRequirement(doc => new OpenApiSecurityRequirement
        {
            [new OpenApiSecuritySchemeReference("ApiKey", doc)] = [],
        });
        o.OperationFilter<SubmitOperationFilter>();
        o.OperationFilter<JobListParameters.OperationFilter>();
    }

    private static OpenApiSchema WithExample(OpenApiSchema schema, JsonNode example)
    {
        schema.Example = example;
        return schema;
    }

    private sealed class SubmitOperationFilter : IOperationFilter
    {
        public void Apply(OpenApiOperation operation, OperationFilterContext context)
        {
            if (operation.OperationId != StylizationEndpoints.SubmitOperationId) return;

            static OpenApiSchema Str(string description, params string[] values)
            {
                var s = new OpenApiSchema { Type = JsonSchemaType.String, Description = description };
                if (values.Length > 0) s.Enum = values.Select(v => (JsonNode)JsonValue.Create(v)).ToList();
                return s;
            }
            // Swagger UI pre-fills every form field (0 for a number, "string" for text) unless the schema has an
            // example; an empty example leaves optional fields empty, and empty fields count as absent.
            static JsonNode Empty() => JsonValue.Create("");
            static OpenApiSchema Int(string description, int? example = null) =>
                new() { Type = JsonSchemaType.Integer, Format = "int32", Description = description, Example = example is { } e ? JsonValue.Create(e) : Empty() };

            var common = new Dictionary<string, IOpenApiSchema>
            {
                ["prompt"] = WithExample(Str("Optional prompt; the styles' trigger words are added from the catalog."), Empty()),
                ["width"] = Int("Output width, multiple of 16 (limits: GET /v1/info). Default: the photo's aspect ratio at about 1 megapixel."),
                ["height"] = Int("Output height, multiple of 16."),
                ["steps"] = Int("Denoising steps (range and default: GET /v1/info).", 25),
                ["guidance"] = new OpenApiSchema { Type = JsonSchemaType.Number, Description = "Guidance scale (default 3.5).", Example = JsonValue.Create(3.5) },
                ["seed"] = new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int64", Description = "Random if absent; always returned.", Example = Empty() },
                ["condSize"] = Int("Condition image size, multiple of 16 (default 512).", 512),
                ["conditionFit"] = WithExample(Str("How the photo fits the square condition image (default stretch).", "stretch", "pad"), JsonValue.Create("stretch")),
                ["outputFormat"] = WithExample(Str("Result format (default png).", "png", "jpeg", "webp"), JsonValue.Create("png")),
                ["webhookUrl"] = new OpenApiSchema { Type = JsonSchemaType.String, Format = "uri", Description = "Receives signed Standard Webhooks events.", Example = Empty() },
            };
            var eventsSchema = new OpenApiSchema
            {
                Type = JsonSchemaType.Array, Items = Str("", "started", "succeeded", "failed", "canceled"),
                Description = "Which events to send to webhookUrl (default: all).",
                Example = new JsonArray(),
            };

            var form = new OpenApiSchema
            {
                Type = JsonSchemaType.Object,
                Required = new HashSet<string> { "image" },
                Properties = new Dictionary<string, IOpenApiSchema>
                {
                    ["image"] = new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary", Description = "The photo (PNG, JPEG or WebP)." },
                    ["style"] = new OpenApiSchema
                    {
                        Type = JsonSchemaType.Array, Items = WithExample(Str("`name` or `name:weight`"), JsonValue.Create("")),
                        Description = "Repeatable: `name` or `name:weight` (see GET /v1/styles).",
                        Example = new JsonArray(),
                    },
                    ["webhookEvents"] = eventsSchema,
                },
            };
            foreach (var (k, v) in common) form.Properties[k] = v;

            var json = new OpenApiSchema
            {
                Type = JsonSchemaType.Object,
                Required = new HashSet<string> { "image" },
                Properties = new Dictionary<string, IOpenApiSchema>
                {
                    ["image"] = new OpenApiSchema { Type = JsonSchemaType.String, Format = "byte", Description = "The photo, base64 (a data: URL is accepted)." },
                    ["styles"] = new OpenApiSchema
                    {
                        Type = JsonSchemaType.Array,
                        Items = new OpenApiSchema
                        {
                            Type = JsonSchemaType.Object, Required = new HashSet<string> { "name" },
                            Properties = new Dictionary<string, IOpenApiSchema>
                            {
                                ["name"] = Str("Style name from the catalog."),
                                ["weight"] = new OpenApiSchema { Type = JsonSchemaType.Number, Description = "LoRA weight (default: the style's default scale)." },
                            },
                        },
                    },
                    ["webhookEvents"] = eventsSchema,
                },
            };
            foreach (var (k, v) in common) json.Properties[k] = v;

            operation.RequestBody = new OpenApiRequestBody
            {
                Required = true,
                Description = "The photo and the job's parameters.",
                Content = new Dictionary<string, OpenApiMediaType>
                {
                    ["multipart/form-data"] = new() { Schema = form },
                    ["application/json"] = new()
                    {
                        Schema = json,
                        Example = JsonNode.Parse("""
                            {"image":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC",
                             "styles":[{"name":"demo","weight":1.0}],"prompt":"a portrait","steps":25,"guidance":3.5,"seed":42,
                             "condSize":512,"conditionFit":"stretch","outputFormat":"png",
                             "webhookUrl":"https://example.com/hooks/omni","webhookEvents":["succeeded","failed"]}
                            """),
                    },
                },
            };
            operation.Parameters ??= [];
            operation.Parameters.Add(new OpenApiParameter
            {
                Name = "Idempotency-Key", In = ParameterLocation.Header, Required = false,
                Description = "Same key + same body returns the same job; the same key with another body is 422.",
                Schema = new OpenApiSchema { Type = JsonSchemaType.String },
            });
            operation.Parameters.Add(new OpenApiParameter
            {
                Name = "Prefer", In = ParameterLocation.Header, Required = false,
                Description = "`wait=N`: hold the answer up to N seconds until the job finishes.",
                Schema = new OpenApiSchema { Type = JsonSchemaType.String }, Example = JsonValue.Create("wait=30"),
            });
        }
    }
}
