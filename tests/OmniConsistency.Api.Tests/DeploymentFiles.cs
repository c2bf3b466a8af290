using System.Collections;
using System.Reflection;
using System.Text.RegularExpressions;
using OmniConsistency.Api.Hosting;
using OmniConsistency.Api.Options;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.Serialization;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// Reads the deployment files (Dockerfile, docker/compose.yaml, deploy/*.yaml) into plain values for the checks in
/// <see cref="DeploymentFilesTests"/>: YAML documents become dictionaries, lists and strings (merge keys resolved),
/// the Dockerfile a list of instructions.
/// </summary>
public static partial class DeploymentFiles
{
    public static string RepoRoot { get; } = FindRepoRoot();

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "OmniConsistency.sln"))) return dir.FullName;
        throw new InvalidOperationException("OmniConsistency.sln not found above " + AppContext.BaseDirectory);
    }

    public static string PathOf(string relative) => Path.Combine(RepoRoot, relative);

    /// <summary>All documents of a YAML file; each is a Dictionary&lt;string, object?&gt; / List&lt;object?&gt; / string tree.</summary>
    public static List<Dictionary<string, object?>> LoadYaml(string relative)
    {
        var deserializer = new DeserializerBuilder().Build();
        var parser = new MergingParser(new Parser(new StringReader(File.ReadAllText(PathOf(relative)))));
        parser.Consume<StreamStart>();
        var docs = new List<Dictionary<string, object?>>();
        while (parser.Accept<DocumentStart>(out _))
        {
            var doc = deserializer.Deserialize<object?>(parser);
            if (doc is null) continue;
            docs.Add(Assert.IsType<Dictionary<string, object?>>(Normalize(doc)));
        }
        return docs;
    }

    private static object? Normalize(object? value) => value switch
    {
        IDictionary<object, object?> map => map.ToDictionary(kv => kv.Key.ToString()!, kv => Normalize(kv.Value)),
        IList list => list.Cast<object?>().Select(Normalize).ToList(),
        _ => value?.ToString(),
    };

    // ---- navigation ----

    public static List<object?> List(this object? node, string key) =>
        Assert.IsType<List<object?>>(Assert.IsType<Dictionary<string, object?>>(node).GetValueOrDefault(key));

    public static string Str(this object? node, string key) =>
        Assert.IsType<string>(Assert.IsType<Dictionary<string, object?>>(node).GetValueOrDefault(key));

    public static object? Get(this object? node, params string[] path)
    {
        foreach (var key in path)
            node = node is Dictionary<string, object?> d ? d.GetValueOrDefault(key) : null;
        return node;
    }

    public static IEnumerable<Dictionary<string, object?>> Maps(this object? node, string key) =>
        node.Get(key) is List<object?> l ? l.Cast<Dictionary<string, object?>>() : [];

    /// <summary>Compose's ${VAR:-default} / ${VAR:?error} / ${VAR}: the default, else empty (as with nothing exported).</summary>
    public static string Interpolate(string value) =>
        ComposeVariable().Replace(value, m => m.Groups["op"].Value == ":-" ? m.Groups["arg"].Value : "");

    [GeneratedRegex(@"\$\{(?<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?<op>:-|:\?)(?<arg>[^}]*))?\}")]
    private static partial Regex ComposeVariable();

    // ---- Dockerfile ----

    public sealed record Instruction(string Keyword, string Arguments, int Stage);

    /// <summary>Instructions with continuation lines joined and comments dropped; Stage counts FROMs (0 = before the first).</summary>
    public static List<Instruction> LoadDockerfile()
    {
        var result = new List<Instruction>();
        var stage = 0;
        var current = "";
        foreach (var raw in File.ReadAllLines(PathOf("Dockerfile")))
        {
            var line = raw.Trim();
            if (current.Length == 0 && (line.Length == 0 || line.StartsWith('#'))) continue;
            if (line.EndsWith('\\')) { current += line[..^1] + " "; continue; }
            current += line;
            var space = current.IndexOf(' ');
            var keyword = (space < 0 ? current : current[..space]).ToUpperInvariant();
            if (keyword == "FROM") stage++;
            result.Add(new Instruction(keyword, space < 0 ? "" : current[(space + 1)..].Trim(), stage));
            current = "";
        }
        return result;
    }

    /// <summary>KEY=value pairs of ENV instructions (both "ENV K=V K2=V2" and the legacy "ENV K V").</summary>
    public static Dictionary<string, string> DockerfileEnv(IEnumerable<Instruction> instructions, int stage)
    {
        var env = new Dictionary<string, string>();
        foreach (var i in instructions.Where(i => i.Keyword == "ENV" && i.Stage == stage))
        {
            var parts = i.Arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (!parts[0].Contains('=')) env[parts[0]] = string.Join(' ', parts.Skip(1));
            else foreach (var p in parts) env[p[..p.IndexOf('=')]] = p[(p.IndexOf('=') + 1)..].Trim('"');
        }
        return env;
    }

    // ---- what the app accepts ----

    /// <summary>
    /// Every configuration key the service reads: the properties (recursively, lists by index) of each options class
    /// with a Section constant (and of the engine's StylizationEngineOptions where it exists), plus the keys read directly.
    /// </summary>
    public static bool IsKnownKey(string key)
    {
        var parts = key.Split(':');
        if (string.Equals(key, RoleOptions.Key, StringComparison.OrdinalIgnoreCase)) return true;
        if (string.Equals(key, "Omni:Logging:Json", StringComparison.OrdinalIgnoreCase)) return true;
        if (string.Equals(key, "ConnectionStrings:" + ScaleOutRegistration.ConnectionStringName, StringComparison.OrdinalIgnoreCase)) return true;
        // The engine's own options (Omni:Engine), where the build has them.
        if (Type.GetType("OmniConsistency.Inference.Pipelines.StylizationEngineOptions, OmniConsistency.Inference") is { } engineOptions &&
            parts.Length > 2 && parts[0].Equals("Omni", StringComparison.OrdinalIgnoreCase) && parts[1].Equals("Engine", StringComparison.OrdinalIgnoreCase) &&
            IsPropertyPath(engineOptions, parts[2..]))
            return true;
        foreach (var type in typeof(ServiceRole).Assembly.GetTypes())
        {
            if (type.GetField("Section", BindingFlags.Public | BindingFlags.Static)?.GetRawConstantValue() is not string section) continue;
            var sectionParts = section.Split(':');
            if (parts.Length <= sectionParts.Length || !parts.Take(sectionParts.Length).SequenceEqual(sectionParts, StringComparer.OrdinalIgnoreCase)) continue;
            if (IsPropertyPath(type, parts.Skip(sectionParts.Length).ToArray())) return true;
        }
        return false;
    }

    private static bool IsPropertyPath(Type type, string[] path)
    {
        if (path.Length == 0) return IsLeaf(type);
        if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(List<>))
            return int.TryParse(path[0], out _) && IsPropertyPath(type.GetGenericArguments()[0], path[1..]);
        var property = type.GetProperty(path[0], BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase);
        return property is { CanWrite: true } && IsPropertyPath(property.PropertyType, path[1..]);
    }

    private static bool IsLeaf(Type t)
    {
        t = Nullable.GetUnderlyingType(t) ?? t;
        return t.IsPrimitive || t.IsEnum || t == typeof(string) || t == typeof(TimeSpan) || t == typeof(decimal);
    }

    /// <summary>Env var name → configuration key, as ASP.NET Core's environment provider maps it.</summary>
    public static string KeyOfEnv(string name) => name.Replace("__", ":", StringComparison.Ordinal);

    /// <summary>The query of the KEDA postgresql trigger in deploy/worker.yaml.</summary>
    public static string KedaQuery() =>
        LoadYaml("deploy/worker.yaml").Single(d => d.Str("kind") == "ScaledObject")
            .Get("spec").List("triggers").Cast<Dictionary<string, object?>>().Single(t => t.Str("type") == "postgresql")
            .Get("metadata").Str("query");
}
