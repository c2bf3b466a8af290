using System.Text.Json.Nodes;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Tests.Flux;
using OmniConsistency.Inference.Tests.Golden;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Consistency;

/// <summary>
/// The condition-branch golden runners honour every case.json parameter or fail loudly: a public case with one
/// parameter changed (so it no longer agrees with its tensors, or asks for something unsupported) must not run
/// silently with a default.
/// </summary>
public class GoldenRunnerParamTests
{
    /// <summary>A copy of a public case whose case.json is edited; models, LoRAs and tensors are linked from the real root.</summary>
    private static GoldenCase Mutated(string name, Action<JsonObject> edit)
    {
        var root = FluxTestModels.TempDir();
        foreach (var folder in new[] { "models", "loras" })
            Directory.CreateSymbolicLink(Path.Combine(root, folder), Path.Combine(GoldenRoot.Path, folder));
        var source = Path.Combine(GoldenRoot.Path, "cases", name);
        var target = Directory.CreateDirectory(Path.Combine(root, "cases", name)).FullName;
        foreach (var file in Directory.GetFiles(source).Where(f => Path.GetFileName(f) != "case.json"))
            File.CreateSymbolicLink(Path.Combine(target, Path.GetFileName(file)), file);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "case.json")))!.AsObject();
        edit(json);
        File.WriteAllText(Path.Combine(target, "case.json"), json.ToJsonString());
        return new GoldenCase(root, name);
    }

    private static JsonObject Consistency(JsonObject c) =>
        c["loras"]!.AsArray().Select(l => l!.AsObject()).First(l => (string?)l["role"] == "consistency");

    public static TheoryData<string, string> OmniEdits => new()
    {
        { "omni_b1", "cond_size_40" },
        { "omni_b1", "lora_cond_size_differs" },
        { "omni_b1", "txt_len" },
        { "omni_b1", "batch" },
        { "omni_b1", "height" },
        { "omni_b1", "consistency_scale" },
        { "omni_b1", "two_lora_weights" },
        { "pipeline_b1_4steps", "cond_size_40" },
        { "pipeline_b1_4steps", "cond_size_72" },
        { "pipeline_b1_4steps", "txt_len" },
        { "pipeline_b1_4steps", "batch" },
    };

    [Theory]
    [MemberData(nameof(OmniEdits))]
    public void AParameterThatDisagreesWithTheCaseFailsLoudly(string name, string edit)
    {
        using var c = Mutated(name, json =>
        {
            var p = json["params"]!.AsObject();
            switch (edit)
            {
                case "cond_size_40": p["cond_size"] = 40; Consistency(json)["cond_size"] = 40; break;
                case "cond_size_72": p["cond_size"] = 72; Consistency(json)["cond_size"] = 72; break;
                case "lora_cond_size_differs": Consistency(json)["cond_size"] = 32; break;
                case "txt_len": p["txt_len"] = (int)p["txt_len"]! + 1; break;
                case "batch": p["batch"] = 2; break;
                case "height": p["height"] = (int)p["height"]! + 16; break;
                case "consistency_scale": Consistency(json)["scale"] = 0.5; break;
                case "two_lora_weights": Consistency(json)["lora_weights"] = new JsonArray(1, 1); break;
                default: throw new ArgumentException(edit);
            }
        });
        using var scope = NewDisposeScope();
        var e = Record.Exception(() => c.Kind == "omni_transformer"
            ? OmniTransformerKind.Run(c, LoraApplication.RunTime)
            : PipelineLatentsKind.Run(c, LoraApplication.RunTime));
        Assert.True(e is InvalidOperationException or GoldenCaseNotSupportedException, $"{edit}: {e?.GetType().Name ?? "no exception"} {e?.Message}");
    }

    [Theory]
    [InlineData("num_images_per_prompt")]
    [InlineData("omni_lora_weights")]
    [InlineData("style_lora_scale")]
    [InlineData("subject_images")]
    [InlineData("cond_size_72")]
    public void AnEndToEndParameterThatCannotBeHonouredFailsLoudly(string edit)
    {
        using var c = Mutated("pipeline_e2e", json =>
        {
            var p = json["params"]!.AsObject();
            switch (edit)
            {
                case "num_images_per_prompt": p["num_images_per_prompt"] = 2; break;
                case "omni_lora_weights": p["omni_lora_weights"] = new JsonArray(0.5); break;
                case "style_lora_scale": p["style_lora_scale"] = 0.5; break;
                case "subject_images": p["subject_images"] = new JsonArray("cond.png"); break;
                case "cond_size_72": p["cond_size"] = 72; Consistency(json)["cond_size"] = 72; break;
                default: throw new ArgumentException(edit);
            }
        });
        using var scope = NewDisposeScope();
        var e = Record.Exception(() => Pipelines.PipelineE2EKind.Run(c, models: null));
        Assert.True(e is InvalidOperationException or GoldenCaseNotSupportedException, $"{edit}: {e?.GetType().Name ?? "no exception"} {e?.Message}");
    }

    [Fact]
    public void AnUneditedCopyStillRunsAndMatches()
    {
        using var c = Mutated("omni_b1", _ => { });
        using var scope = NewDisposeScope();
        c.AssertMatches(OmniTransformerKind.Run(c, LoraApplication.RunTime));
    }

    [Fact]
    public void SingleFileModelsFindTheSchedulerBesideTheirConfig()
    {
        using var c = Mutated("pipeline_b1_4steps", json =>
        {
            json["model"] = "models/tiny-flux-bfl.safetensors";
            json["model_config"] = "models/tiny-flux/transformer/config.json";
        });
        Assert.Equal(Path.Combine(c.Root, "models", "tiny-flux", "scheduler", "scheduler_config.json"), PipelineLatentsKind.SchedulerConfigPath(c));
    }
}
