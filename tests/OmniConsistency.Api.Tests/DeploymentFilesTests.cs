using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Configuration;
using OmniConsistency.Api.Options;

namespace OmniConsistency.Api.Tests;

/// <summary>
/// The Dockerfile, docker/compose.yaml and deploy/ manifests are parsed and checked against each other and against
/// the application: ports, image names, probe paths (routes the app really maps in that role), roles, and every
/// OMNI__/ConnectionStrings__ variable naming a configuration key the service reads.
/// </summary>
public sealed class DeploymentFilesTests
{
    private const string AppDll = "OmniConsistency.Api.dll";
    private static readonly DeploymentFiles.Instruction[] Docker = DeploymentFiles.LoadDockerfile().ToArray();
    private static readonly int FinalStage = Docker.Max(i => i.Stage);
    private static readonly Dictionary<string, string> ImageEnv = DeploymentFiles.DockerfileEnv(Docker, FinalStage);

    /// <summary>The port the app listens on in the image (ASP.NET Core reads ASPNETCORE_HTTP_PORTS).</summary>
    private static int AppPort => int.Parse(ImageEnv["ASPNETCORE_HTTP_PORTS"]);

    private static void AssertEnvNamesKnown(IEnumerable<string> names, string where)
    {
        foreach (var name in names.Where(n => n.StartsWith("OMNI__", StringComparison.OrdinalIgnoreCase) || n.StartsWith("ConnectionStrings__", StringComparison.Ordinal)))
            Assert.True(DeploymentFiles.IsKnownKey(DeploymentFiles.KeyOfEnv(name)), $"{where}: {name} is not a configuration key the service reads");
    }

    private static ServiceRole RoleOf(IEnumerable<string> args)
    {
        var list = args.ToList();
        var i = list.IndexOf("--role");
        Assert.True(i >= 0 && i + 1 < list.Count, $"no --role in [{string.Join(' ', list)}]");
        return RoleOptions.Read(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { [RoleOptions.Key] = list[i + 1] }).Build());
    }

    /// <summary>The routes the app maps in a role (built, not started: nothing connects to the dummy database).</summary>
    private static HashSet<string> RoutesOf(ServiceRole role)
    {
        var settings = new Dictionary<string, string?>
        {
            [RoleOptions.Key] = role.ToString(),
            ["Omni:Storage:Provider"] = "postgres",
            ["ConnectionStrings:Jobs"] = "Host=127.0.0.1;Port=1;Database=none",
            ["Omni:Webhooks:Secret"] = ServiceHost.WebhookSecret,
            ["Omni:Storage:DataDirectory"] = ServiceHost.NewDataDirectory(),
        };
        using var app = ServiceApp.Build(ServiceApp.CreateBuilder([], c => c.AddInMemoryCollection(settings)));
        var routes = ((IEndpointRouteBuilder)app).DataSources.SelectMany(d => d.Endpoints).OfType<RouteEndpoint>()
            .Select(e => "/" + e.RoutePattern.RawText!.TrimStart('/')).ToHashSet();
        Directory.Delete(settings["Omni:Storage:DataDirectory"]!, recursive: true);
        return routes;
    }

    [Fact]
    public void Dockerfile_builds_cuda_and_runs_non_root_on_a_cuda_runtime_with_a_readiness_healthcheck()
    {
        Assert.True(FinalStage >= 2, "multi-stage: a build stage and a runtime stage");
        var args = Docker.Where(i => i.Keyword == "ARG").Select(i => i.Arguments.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1]);
        string Resolve(string s) => System.Text.RegularExpressions.Regex.Replace(s, @"\$\{(\w+)\}", m => args.GetValueOrDefault(m.Groups[1].Value, m.Value));

        var publish = Assert.Single(Docker, i => i.Keyword == "RUN" && i.Arguments.Contains("dotnet publish"));
        Assert.Contains("-p:TorchBackend=cuda", publish.Arguments);
        Assert.Contains("src/OmniConsistency.Api/OmniConsistency.Api.csproj", publish.Arguments);
        Assert.NotEqual(FinalStage, publish.Stage);

        var runtimeBase = Resolve(Docker.Last(i => i.Keyword == "FROM").Arguments.Split(' ')[0]);
        Assert.StartsWith("nvidia/cuda:12.", runtimeBase);
        Assert.Contains("runtime-ubuntu24.04", runtimeBase); // libstdc++ with GLIBCXX_3.4.32
        Assert.Contains(Docker, i => i.Stage == FinalStage && i.Keyword == "COPY" && i.Arguments.Contains("/usr/share/dotnet"));
        Assert.Contains("aspnet:10.0", Resolve("${ASPNET_IMAGE}"));

        var user = Docker.Last(i => i.Keyword == "USER").Arguments.Split(':')[0];
        Assert.NotEqual("root", user);
        Assert.NotEqual("0", user);

        Assert.Equal(AppPort.ToString(), Docker.Single(i => i.Keyword == "EXPOSE").Arguments);
        var health = Docker.Single(i => i.Keyword == "HEALTHCHECK").Arguments;
        Assert.Contains($"http://127.0.0.1:{AppPort}/readyz", health);
        Assert.Contains("/readyz", RoutesOf(ServiceRole.All));

        Assert.Contains(AppDll, Docker.Single(i => i.Keyword == "ENTRYPOINT").Arguments);
        Assert.True(File.Exists(Path.Combine(AppContext.BaseDirectory, AppDll)), "the entry point names the Api assembly");
        RoleOf(System.Text.Json.JsonSerializer.Deserialize<string[]>(Docker.Single(i => i.Keyword == "CMD").Arguments)!);
        AssertEnvNamesKnown(ImageEnv.Keys, "Dockerfile");

        // Everything the build stage copies exists in the repository.
        foreach (var copy in Docker.Where(i => i.Keyword == "COPY" && !i.Arguments.StartsWith("--from", StringComparison.Ordinal)))
            foreach (var source in copy.Arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries)[..^1])
                Assert.True(File.Exists(DeploymentFiles.PathOf(source)) || Directory.Exists(DeploymentFiles.PathOf(source)), $"COPY source {source} missing");
    }

    [Fact]
    public void Compose_runs_postgres_an_api_and_a_gpu_worker_from_one_image()
    {
        var compose = Assert.Single(DeploymentFiles.LoadYaml("docker/compose.yaml"));
        var services = Assert.IsType<Dictionary<string, object?>>(compose["services"]);
        Assert.Contains("postgres", services.Keys);
        var api = services["api"];
        var worker = services["worker"];

        var image = DeploymentFiles.Interpolate(api.Str("image"));
        Assert.Equal(image, DeploymentFiles.Interpolate(worker.Str("image")));
        Assert.Equal("../Dockerfile", Path.Combine(api.Get("build").Str("context"), api.Get("build").Str("dockerfile")).Replace('\\', '/'));
        Assert.Equal(ImageName(K8sContainers().First().Image), ImageName(image));

        Assert.Equal(ServiceRole.Api, RoleOf(api.List("command").Cast<string>()));
        Assert.Equal(ServiceRole.Worker, RoleOf(worker.List("command").Cast<string>()));
        Assert.Equal(AppPort.ToString(), Assert.IsType<string>(Assert.Single(api.List("ports"))).Split(':')[^1]);

        var gpu = Assert.Single(worker.Get("deploy", "resources", "reservations").Maps("devices"));
        Assert.Equal("nvidia", gpu.Str("driver"));
        Assert.Equal("1", gpu.Str("count"));
        Assert.Contains("gpu", gpu.List("capabilities").Cast<string>());
        Assert.Null(api.Get("deploy")); // the API needs no GPU

        foreach (var (name, service) in new (string, object?)[] { ("api", api), ("worker", worker) })
        {
            var env = Assert.IsType<Dictionary<string, object?>>(service.Get("environment"));
            AssertEnvNamesKnown(env.Keys, "compose " + name);
            Assert.Equal("postgres", env["OMNI__Storage__Provider"]);
            Assert.Contains("Host=postgres;", DeploymentFiles.Interpolate(env["ConnectionStrings__Jobs"]!.ToString()!));
            Assert.Contains(service.List("volumes").Cast<string>(), v => v.EndsWith(":/models:ro", StringComparison.Ordinal));
            Assert.Equal("service_healthy", service.Get("depends_on", "postgres", "condition"));
        }
        Assert.NotNull(api.Get("environment", "OMNI__Auth__ApiKeys__0__Key"));
    }

    private sealed record Container(string Deployment, ServiceRole Role, Dictionary<string, object?> Spec, Dictionary<string, object?> PodSpec, Dictionary<string, object?> Labels)
    {
        public string Image => Spec.Str("image");
    }

    private static List<Dictionary<string, object?>> K8s() =>
        DeploymentFiles.LoadYaml("deploy/kustomization.yaml").Single().List("resources").Cast<string>()
            .SelectMany(r => DeploymentFiles.LoadYaml("deploy/" + r)).ToList();

    private static List<Container> K8sContainers() =>
        K8s().Where(d => d.Str("kind") == "Deployment").SelectMany(d => d.Get("spec", "template", "spec").Maps("containers").Select(c =>
            new Container(d.Get("metadata").Str("name"), RoleOf(c.List("args").Cast<string>()), c,
                (Dictionary<string, object?>)d.Get("spec", "template", "spec")!, (Dictionary<string, object?>)d.Get("spec", "template", "metadata", "labels")!))).ToList();

    private static string ImageName(string image) => image.Split('/')[^1].Split(':')[0];

    [Fact]
    public void Kubernetes_manifests_are_complete_and_consistent()
    {
        var docs = K8s();
        var listed = DeploymentFiles.LoadYaml("deploy/kustomization.yaml").Single().List("resources").Cast<string>().Order();
        Assert.Equal(Directory.GetFiles(DeploymentFiles.PathOf("deploy"), "*.yaml").Select(Path.GetFileName).Where(f => f != "kustomization.yaml").Order(), listed);
        foreach (var d in docs)
        {
            Assert.False(string.IsNullOrEmpty(d.Str("apiVersion")));
            Assert.False(string.IsNullOrEmpty(d.Get("metadata").Str("name")), $"{d.Str("kind")} without a name");
        }
        string[] Names(string kind) => docs.Where(d => d.Str("kind") == kind).Select(d => d.Get("metadata").Str("name")).ToArray();
        foreach (var kind in new[] { "Deployment", "Service", "ConfigMap", "Secret", "PersistentVolumeClaim", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ScaledObject", "TriggerAuthentication" })
            Assert.NotEmpty(Names(kind));

        var containers = K8sContainers();
        Assert.Single(containers.Select(c => c.Image).Distinct());
        Assert.Contains(containers, c => c.Role == ServiceRole.Api);
        Assert.Contains(containers, c => c.Role == ServiceRole.Worker);
        var routes = new Dictionary<ServiceRole, HashSet<string>>();
        foreach (var c in containers)
        {
            var where = $"{c.Deployment}/{c.Spec.Str("name")}";
            var port = Assert.Single(c.Spec.Maps("ports"));
            Assert.Equal(AppPort.ToString(), port.Str("containerPort"));
            if (!routes.TryGetValue(c.Role, out var roleRoutes)) routes[c.Role] = roleRoutes = RoutesOf(c.Role);
            foreach (var probe in new[] { "readinessProbe", "livenessProbe", "startupProbe" })
            {
                if (c.Spec.Get(probe, "httpGet") is not Dictionary<string, object?> get) continue;
                Assert.True(get.Str("port") == port.Str("name") || get.Str("port") == port.Str("containerPort"), $"{where} {probe} port");
                Assert.True(roleRoutes.Contains(get.Str("path")), $"{where} {probe} path {get.Str("path")} is not an endpoint of the {c.Role} role");
            }
            Assert.Equal("/readyz", c.Spec.Get("readinessProbe", "httpGet", "path"));
            Assert.Equal("/healthz", c.Spec.Get("livenessProbe", "httpGet", "path"));

            foreach (var from in c.Spec.Maps("envFrom"))
            {
                if (from.Get("configMapRef") is Dictionary<string, object?> cm) AssertEnvNamesKnown(Keys(docs, "ConfigMap", cm.Str("name")), where);
                if (from.Get("secretRef") is Dictionary<string, object?> sr) AssertEnvNamesKnown(Keys(docs, "Secret", sr.Str("name")), where);
            }
            foreach (var env in c.Spec.Maps("env"))
            {
                AssertEnvNamesKnown([env.Str("name")], where);
                if (env.Get("valueFrom", "secretKeyRef") is Dictionary<string, object?> key) Assert.Contains(key.Str("key"), Keys(docs, "Secret", key.Str("name")));
            }
            foreach (var volume in c.PodSpec.Maps("volumes").Where(v => v.Get("persistentVolumeClaim") is not null))
                Assert.Contains(volume.Get("persistentVolumeClaim").Str("claimName"), Names("PersistentVolumeClaim"));
            var models = Assert.Single(c.Spec.Maps("volumeMounts"), m => m.Str("mountPath") == "/models");
            Assert.Equal("true", models.Str("readOnly"));
            Assert.Equal("true", c.PodSpec.Get("securityContext", "runAsNonRoot"));

            var gpus = c.Spec.Get("resources", "limits", "nvidia.com/gpu") as string;
            Assert.Equal(c.Role == ServiceRole.Worker ? "1" : null, gpus);
            Assert.Equal(gpus, c.Spec.Get("resources", "requests", "nvidia.com/gpu") as string);
        }

        bool Selects(object? selector, ServiceRole role) => selector is Dictionary<string, object?> sel &&
            containers.Any(c => c.Role == role && sel.All(kv => c.Labels.GetValueOrDefault(kv.Key) as string == kv.Value as string));
        var service = docs.Single(d => d.Str("kind") == "Service");
        Assert.True(Selects(service.Get("spec", "selector"), ServiceRole.Api), "the Service selects the API pods");
        Assert.Equal("http", Assert.Single(service.Get("spec").Maps("ports")).Str("targetPort"));
        foreach (var pdb in docs.Where(d => d.Str("kind") == "PodDisruptionBudget"))
            Assert.True(Selects(pdb.Get("spec", "selector", "matchLabels"), ServiceRole.Api) || Selects(pdb.Get("spec", "selector", "matchLabels"), ServiceRole.Worker));

        var hpa = docs.Single(d => d.Str("kind") == "HorizontalPodAutoscaler");
        Assert.Equal(ServiceRole.Api, containers.Single(c => c.Deployment == hpa.Get("spec", "scaleTargetRef").Str("name")).Role);

        var scaled = docs.Single(d => d.Str("kind") == "ScaledObject");
        Assert.Equal(ServiceRole.Worker, containers.Single(c => c.Deployment == scaled.Get("spec", "scaleTargetRef").Str("name")).Role);
        var trigger = Assert.Single(scaled.Get("spec").Maps("triggers"));
        Assert.Equal("postgresql", trigger.Str("type"));
        var auth = docs.Single(d => d.Str("kind") == "TriggerAuthentication" && d.Get("metadata").Str("name") == trigger.Get("authenticationRef").Str("name"));
        var secretRef = Assert.Single(auth.Get("spec").Maps("secretTargetRef"));
        Assert.Equal("connection", secretRef.Str("parameter"));
        Assert.Contains(secretRef.Str("key"), Keys(docs, "Secret", secretRef.Str("name")));
        // The query names the jobs table and only real status values (it is also run against PostgreSQL in PostgresStoreTests).
        var query = DeploymentFiles.KedaQuery();
        Assert.Contains("FROM jobs", query);
        foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(query, "'([a-z]+)'"))
            Assert.True(Enum.GetValues<Storage.JobStatus>().Any(s => Storage.JobStatusNames.ToWire(s) == m.Groups[1].Value), $"status '{m.Groups[1].Value}'");
    }

    private static IEnumerable<string> Keys(List<Dictionary<string, object?>> docs, string kind, string name)
    {
        var doc = docs.Single(d => d.Str("kind") == kind && d.Get("metadata").Str("name") == name);
        return ((doc.Get("data") ?? doc.Get("stringData")) as Dictionary<string, object?>)?.Keys ?? Enumerable.Empty<string>();
    }

    [Fact]
    public void Environment_names_that_are_not_option_keys_are_caught()
    {
        // The check above must be able to fail.
        Assert.True(DeploymentFiles.IsKnownKey("Omni:Queue:Capacity"));
        Assert.True(DeploymentFiles.IsKnownKey("omni:auth:apikeys:0:key"));
        Assert.True(DeploymentFiles.IsKnownKey("Omni:Blobs:S3:Bucket"));
        Assert.False(DeploymentFiles.IsKnownKey("Omni:Queue:Capacty"));
        Assert.False(DeploymentFiles.IsKnownKey("Omni:Auth:ApiKeys:Key"));
        Assert.False(DeploymentFiles.IsKnownKey("Omni:Storage"));
    }
}
