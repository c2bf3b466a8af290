using System.Text.Json;
using System.Text.Json.Serialization;

namespace OmniConsistency.Api.Storage;

/// <summary>JSON used for the columns that hold structured values (parameters, result, error).</summary>
internal static class StoreJson
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
    };

    public static string Write<T>(T value) => JsonSerializer.Serialize(value, Options);

    public static T Read<T>(string json) =>
        JsonSerializer.Deserialize<T>(json, Options) ?? throw new InvalidDataException($"Null {typeof(T).Name} in the job store.");
}
