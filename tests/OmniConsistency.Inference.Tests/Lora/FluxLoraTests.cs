using System.Text.Json;
using OmniConsistency.Inference.Flux;
using OmniConsistency.Inference.IO;
using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Tests.Flux;
using OmniConsistency.Inference.Tests.Golden;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Lora;

/// <summary>Style LoRAs on the real Flux transformer.</summary>
public class FluxLoraTests
{
    public static IEnumerable<TheoryDataRow<string>> StyleCases() =>
        Directory.GetDirectories(Path.Combine(GoldenRoot.Path, "cases"))
            .Where(d => File.Exists(Path.Combine(d, "case.json")) &&
                        JsonDocument.Parse(File.ReadAllBytes(Path.Combine(d, "case.json"))).RootElement.GetProperty("kind").GetString() == "style_lora")
            .Select(d => new TheoryDataRow<string>(Path.GetFileName(d)))
            .OrderBy(r => r.Data);

    [Theory]
    [MemberData(nameof(StyleCases))]
    public void MergedWeightsMatchTheGoldenCasesToo(string name)
    {
        using var c = new GoldenCase(GoldenRoot.Path, name);
        using var scope = NewDisposeScope();
        c.AssertMatches(StyleLoraKind.Run(c, LoraApplication.Merged));
    }

    /// <summary>
    /// The hidden set's shape (3 heads of 16, D = 48, 3 double + 1 single block) with three adapters in three layouts,
    /// one with a negative weight, under lora_scale 1.3; compared with a model whose weights were edited by an
    /// independent, test-side computation of every ΔW.
    /// </summary>
    [Fact]
    public void ThreeAdaptersOnAnotherModelSizeMatchAnIndependentlyEditedModel()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempFolder();
        var config = FluxTestModels.TinyH;
        long d = config.InnerDim, mlp = 4 * d;
        using var model = FluxTestModels.Random(config, seed: 5);
        using var reference = FluxTestModels.Random(config, seed: 5);
        var g = new Generator(11);
        Tensor R(params long[] s) => randn(s, generator: g).div_(4);

        // 1) kohya (alphas folded, fused qkv / linear1 split by the model's dims, final adaLN halves swapped)
        var kohya = new Dictionary<string, Tensor>();
        var deltas = new List<(string Module, Tensor Delta, double Weight)>();
        void Kohya(string name, long outRows, long inF, float alpha, params (string Module, long Rows)[] parts)
        {
            const long r = 4;
            var down = R(r, inF);
            var up = R(outRows, r);
            kohya[$"lora_unet_{name}.lora_down.weight"] = down;
            kohya[$"lora_unet_{name}.lora_up.weight"] = up;
            kohya[$"lora_unet_{name}.alpha"] = tensor(alpha);
            var w = up.to(ScalarType.Float64).matmul(down.to(ScalarType.Float64)) * (alpha / r);
            long row = 0;
            foreach (var (module, rows) in parts)
            {
                deltas.Add((module, w.narrow(0, row, rows), 0.7));
                row += rows;
            }
        }
        for (int i = 0; i < config.NumLayers; i++)
        {
            string t = $"transformer_blocks.{i}";
            Kohya($"double_blocks_{i}_img_attn_qkv", 3 * d, d, 3f, ($"{t}.attn.to_q", d), ($"{t}.attn.to_k", d), ($"{t}.attn.to_v", d));
            Kohya($"double_blocks_{i}_txt_attn_qkv", 3 * d, d, 1f, ($"{t}.attn.add_q_proj", d), ($"{t}.attn.add_k_proj", d), ($"{t}.attn.add_v_proj", d));
            Kohya($"double_blocks_{i}_img_mlp_2", d, mlp, 2f, ($"{t}.ff.net.2", d));
            Kohya($"double_blocks_{i}_txt_mod_lin", 6 * d, d, 4f, ($"{t}.norm1_context.linear", 6 * d));
        }
        Kohya("single_blocks_0_linear1", 3 * d + mlp, d, 2f,
            ("single_transformer_blocks.0.attn.to_q", d), ("single_transformer_blocks.0.attn.to_k", d), ("single_transformer_blocks.0.attn.to_v", d), ("single_transformer_blocks.0.proj_mlp", mlp));
        Kohya("single_blocks_0_linear2", d, d + mlp, 4f, ("single_transformer_blocks.0.proj_out", d));
        {
            var down = R(4, d);
            var up = R(2 * d, 4);
            kohya["lora_unet_final_layer_adaLN_modulation_1.lora_down.weight"] = down;
            kohya["lora_unet_final_layer_adaLN_modulation_1.lora_up.weight"] = up;
            kohya["lora_unet_final_layer_adaLN_modulation_1.alpha"] = tensor(4f);
            var w = up.to(ScalarType.Float64).matmul(down.to(ScalarType.Float64));
            deltas.Add(("norm_out.linear", cat([w.narrow(0, d, d), w.narrow(0, 0, d)], 0), 0.7));
        }
        SafetensorsWriter.Save(dir.File("kohya.safetensors"), kohya);

        // 2) diffusers/peft without alpha (scale 1), negative weight
        var peft = new Dictionary<string, Tensor>();
        foreach (var (module, inF, outF) in new[] { ("transformer_blocks.1.attn.to_q", d, d), ("transformer_blocks.2.ff_context.net.0.proj", d, mlp), ("x_embedder", config.InChannels, d), ("proj_out", d, config.InChannels) })
        {
            var a = R(3, inF);
            var b = R(outF, 3);
            peft[$"transformer.{module}.lora_A.weight"] = a;
            peft[$"transformer.{module}.lora_B.weight"] = b;
            deltas.Add((module, b.to(ScalarType.Float64).matmul(a.to(ScalarType.Float64)), -0.5));
        }
        SafetensorsWriter.Save(dir.File("peft.safetensors"), peft);

        // 3) peft in BFL naming with alpha 1 (scale 1/2)
        {
            var a = R(2, d);
            var b = R(3 * d, 2);
            SafetensorsWriter.Save(dir.File("bfl.safetensors"), new Dictionary<string, Tensor>
            {
                ["diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight"] = a,
                ["diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight"] = b,
                ["diffusion_model.double_blocks.0.img_attn.qkv.alpha"] = tensor(1f),
            });
            var w = b.to(ScalarType.Float64).matmul(a.to(ScalarType.Float64)) * 0.5;
            string[] qkv = ["to_q", "to_k", "to_v"];
            for (int j = 0; j < 3; j++) deltas.Add(($"transformer_blocks.0.attn.{qkv[j]}", w.narrow(0, j * d, d), 1.3));
        }

        const double loraScale = 1.3;
        var referenceLinears = new LoraTargetModules(reference).Modules;
        using (no_grad())
            foreach (var (module, delta, weight) in deltas)
            {
                var p = referenceLinears[module].weight;
                p.copy_(p.to(ScalarType.Float64) + delta * (weight * loraScale));
            }

        var targets = new LoraTargetModules(model);
        var lt = new LoraModelTargets(targets.Shapes);
        using var ka = LoraLoader.Load(dir.File("kohya.safetensors"), lt, ScalarType.Float32, CPU);
        using var pa = LoraLoader.Load(dir.File("peft.safetensors"), lt, ScalarType.Float32, CPU);
        using var ba = LoraLoader.Load(dir.File("bfl.safetensors"), lt, ScalarType.Float32, CPU);
        var set = new LoraAdapterSet(loraScale).Add(ka, 0.7).Add(pa, -0.5).Add(ba, 1.3);

        var inputs = FluxTestModels.Inputs(config, batch: 2, textLength: 5, rows: 3, cols: 4, seed: 12);
        var expected = reference.Forward(inputs);
        var baseline = model.Forward(inputs);
        Assert.True((expected - baseline).abs().max().item<float>() > 0.05, "the LoRAs should change the output");
        foreach (var mode in new[] { LoraApplication.RunTime, LoraApplication.Merged })
        {
            using (set.Apply(mode, targets))
            {
                var got = model.Forward(inputs);
                var err = (got - expected).abs().max().item<float>();
                Assert.True(err < 1e-4, $"{mode}: max |diff| {err}");
            }
            Assert.True(TensorAssert.TensorsEqual(baseline, model.Forward(inputs)), $"{mode}: not restored");
        }
    }
}
