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

/// <summary>
/// Golden cases shaped like the hidden set's (FORMAT.md), written into a temporary golden root and run through the same
/// kind runners the harness uses: a random <c>tiny-flux-h</c> (3+1 blocks, 3 heads × 16, axes [4,4,8], joint 24,
/// pooled 40) as a diffusers folder and as a BFL single file with <c>model_config</c>; <c>style-peft-h</c> (rank 3, no
/// alpha keys), <c>style-kohya-h</c> (no linear1, per-module alphas ≠ r), a full kohya file with linear1; three-adapter
/// mixes with a negative weight under <c>params.lora_scale</c>; batch 2. Expected values are reference-free: the model
/// with every ΔW added to its weights in float64 by a test-side reading of FORMAT.md's key table.
/// </summary>
public sealed class HiddenShapedGoldenCaseTests : IDisposable
{
    private const long Seed = 17;
    private static readonly FluxTransformerConfig Config = FluxTestModels.TinyH;
    private static readonly long D = Config.InnerDim, Mlp = 4 * Config.InnerDim;
    private static readonly Tolerance Tol = new(1e-4, 1e-3);

    private readonly TempFolder _root = new();
    private readonly FluxTransformer2DModel _model;
    // Per LoRA file: (diffusers module, ΔW [out,in] in float64) as FORMAT.md says the file applies it at scale 1.
    private readonly Dictionary<string, List<(string Module, Tensor Delta)>> _deltas = [];

    public HiddenShapedGoldenCaseTests()
    {
        _model = FluxTestModels.Random(Config, Seed);
        var folder = Directory.CreateDirectory(Path.Combine(_root.Path, "models", "tiny-flux-h", "transformer")).FullName;
        FluxTestModels.WriteDiffusersFolder(_model, folder);
        SafetensorsWriter.Save(_root.File("models/tiny-flux-h-bfl.safetensors"), FluxTestModels.ToBflLayout(FluxTestModels.StateDict(_model), Config));
        Directory.CreateDirectory(_root.File("loras"));
        WritePeftNoAlpha("style-peft-h", seed: 21);
        WriteKohya("style-kohya-h", seed: 22, withLinear1: false);
        WriteKohya("style-kohya-h-full", seed: 23, withLinear1: true);
    }

    public void Dispose()
    {
        _model.Dispose();
        foreach (var list in _deltas.Values)
            foreach (var (_, t) in list) t.Dispose();
        _root.Dispose();
    }

    [Fact]
    public void TransformerCasesFromFolderAndBflFileWithAnotherConfig()
    {
        using var scope = NewDisposeScope();
        var inputs = Inputs(batch: 2, txtLen: 5, height: 48, width: 64, seed: 3);
        var expected = new Dictionary<string, Tensor>();
        using (var capture = new TensorCapture("debug."))
        {
            expected["sample"] = _model.Forward(inputs, new FluxForwardContext { Capture = capture.Sink });
            foreach (var (name, t) in capture.Tensors) expected[name] = t.clone();
        }
        Assert.Contains("debug.transformer_blocks.2.hidden_states", expected.Keys);
        Assert.Contains("debug.single_transformer_blocks.0.hidden_states", expected.Keys);

        WriteCase("transformer_h_b2", "transformer", "models/tiny-flux-h", null, [], inputs, expected, Params(inputs, debug: true));
        WriteCase("transformer_h_b2_bfl", "transformer", "models/tiny-flux-h-bfl.safetensors", "models/tiny-flux-h/transformer/config.json", [],
            inputs, new() { ["sample"] = expected["sample"] }, Params(inputs, debug: false));

        foreach (var name in new[] { "transformer_h_b2", "transformer_h_b2_bfl" })
        {
            using var c = new GoldenCase(_root.Path, name);
            c.AssertMatches(new TransformerKind().Run(c));
        }
    }

    [Theory]
    [InlineData("peft_no_alpha", "models/tiny-flux-h", 1.0)]
    [InlineData("kohya_no_linear1", "models/tiny-flux-h-bfl.safetensors", 1.0)]
    [InlineData("three_mix", "models/tiny-flux-h-bfl.safetensors", 0.7)]
    [InlineData("three_mix_scale0", "models/tiny-flux-h", 0.0)]
    public void StyleCases(string variant, string model, double loraScale)
    {
        using var scope = NewDisposeScope();
        var loras = variant switch
        {
            "peft_no_alpha" => new[] { ("style-peft-h", 1.0) },
            "kohya_no_linear1" => [("style-kohya-h", 1.0)],
            _ => [("style-peft-h", 0.8), ("style-kohya-h", -0.6), ("style-kohya-h-full", 0.5)],
        };
        var inputs = Inputs(batch: 2, txtLen: 6, height: 64, width: 32, seed: 4);
        using var reference = FluxTestModels.Random(Config, Seed);
        var linears = new LoraTargetModules(reference).Modules;
        using (no_grad())
            foreach (var (file, weight) in loras)
                foreach (var (module, delta) in _deltas[file])
                {
                    var w = linears[module].weight;
                    w.copy_(w.to(ScalarType.Float64) + delta * (weight * loraScale));
                }
        var expected = reference.Forward(inputs);
        var baseline = _model.Forward(inputs);
        double moved = (expected - baseline).abs().max().item<float>();
        if (loraScale == 0) Assert.Equal(0, moved);
        else Assert.True(moved > 50 * Tol.Atol, $"the LoRAs move the output by only {moved}");

        var name = $"style_h_{variant}";
        var configPath = model.EndsWith(".safetensors", StringComparison.Ordinal) ? "models/tiny-flux-h/transformer/config.json" : null;
        var entries = loras.Select((l, i) => new Dictionary<string, object>
        {
            ["path"] = $"loras/{l.Item1}.safetensors", ["role"] = "style", ["scale"] = l.Item2, ["adapter_name"] = $"a{i}",
        }).ToList();
        var p = Params(inputs, debug: false);
        if (loraScale != 1.0) p["lora_scale"] = loraScale;
        WriteCase(name, "style_lora", model, configPath, entries, inputs, new() { ["sample"] = expected }, p);

        using var c = new GoldenCase(_root.Path, name);
        foreach (var mode in new[] { LoraApplication.RunTime, LoraApplication.Merged })
            using (NewDisposeScope())
                c.AssertMatches(StyleLoraKind.Run(c, mode));
    }

    // ---- LoRA files (test-side layouts from FORMAT.md "Style LoRAs") ----

    private static Generator Gen(long seed) => new((ulong)seed);

    private void WritePeftNoAlpha(string name, long seed)
    {
        using var scope = NewDisposeScope();
        const long r = 3;
        var g = Gen(seed);
        var tensors = new Dictionary<string, Tensor>();
        var deltas = new List<(string, Tensor)>();
        // Every Linear of the double and single blocks, plus x_embedder, context_embedder, proj_out, norm_out.linear.
        var modules = FluxLinearShapes.For(D, Config.NumLayers, Config.NumSingleLayers, Config.InChannels, Config.JointAttentionDim, Config.PooledProjectionDim)
            .Where(kv => !kv.Key.StartsWith("time_text_embed.", StringComparison.Ordinal));
        foreach (var (module, shape) in modules)
        {
            var a = randn([r, shape.In], generator: g).div_(4);
            var b = randn([shape.Out, r], generator: g).div_(4);
            tensors[$"transformer.{module}.lora_A.weight"] = a;
            tensors[$"transformer.{module}.lora_B.weight"] = b;
            deltas.Add((module, b.to(ScalarType.Float64).matmul(a.to(ScalarType.Float64)).DetachFromDisposeScope()));
        }
        SafetensorsWriter.Save(_root.File($"loras/{name}.safetensors"), tensors);
        _deltas[name] = deltas;
    }

    private void WriteKohya(string name, long seed, bool withLinear1)
    {
        using var scope = NewDisposeScope();
        const long r = 4;
        float[] alphas = [2f, 3f, 6f, 1f, 8f];
        var g = Gen(seed);
        var tensors = new Dictionary<string, Tensor>();
        var deltas = new List<(string, Tensor)>();
        int k = 0;
        void Module(string kohya, long inF, params (string Target, long Rows)[] parts)
        {
            float alpha = alphas[k++ % alphas.Length];
            long outF = parts.Sum(p => p.Rows);
            var down = randn([r, inF], generator: g).div_(4);
            var up = randn([outF, r], generator: g).div_(4);
            tensors[$"lora_unet_{kohya}.lora_down.weight"] = down;
            tensors[$"lora_unet_{kohya}.lora_up.weight"] = up;
            tensors[$"lora_unet_{kohya}.alpha"] = tensor(alpha);
            var w = up.to(ScalarType.Float64).matmul(down.to(ScalarType.Float64)) * (alpha / (double)r);
            long row = 0;
            foreach (var (target, rows) in parts)
            {
                deltas.Add((target, w.narrow(0, row, rows).clone().DetachFromDisposeScope()));
                row += rows;
            }
        }
        for (int n = 0; n < Config.NumLayers; n++)
        {
            string b = $"double_blocks_{n}", t = $"transformer_blocks.{n}";
            Module($"{b}_img_attn_qkv", D, ($"{t}.attn.to_q", D), ($"{t}.attn.to_k", D), ($"{t}.attn.to_v", D));
            Module($"{b}_txt_attn_qkv", D, ($"{t}.attn.add_q_proj", D), ($"{t}.attn.add_k_proj", D), ($"{t}.attn.add_v_proj", D));
            Module($"{b}_img_attn_proj", D, ($"{t}.attn.to_out.0", D));
            Module($"{b}_txt_attn_proj", D, ($"{t}.attn.to_add_out", D));
            Module($"{b}_img_mlp_0", D, ($"{t}.ff.net.0.proj", Mlp));
            Module($"{b}_img_mlp_2", Mlp, ($"{t}.ff.net.2", D));
            Module($"{b}_txt_mlp_0", D, ($"{t}.ff_context.net.0.proj", Mlp));
            Module($"{b}_txt_mlp_2", Mlp, ($"{t}.ff_context.net.2", D));
            Module($"{b}_img_mod_lin", D, ($"{t}.norm1.linear", 6 * D));
            Module($"{b}_txt_mod_lin", D, ($"{t}.norm1_context.linear", 6 * D));
        }
        for (int n = 0; n < Config.NumSingleLayers; n++)
        {
            string b = $"single_blocks_{n}", t = $"single_transformer_blocks.{n}";
            if (withLinear1)
                Module($"{b}_linear1", D, ($"{t}.attn.to_q", D), ($"{t}.attn.to_k", D), ($"{t}.attn.to_v", D), ($"{t}.proj_mlp", Mlp));
            Module($"{b}_linear2", D + Mlp, ($"{t}.proj_out", D));
            Module($"{b}_modulation_lin", D, ($"{t}.norm.linear", 3 * D));
        }
        SafetensorsWriter.Save(_root.File($"loras/{name}.safetensors"), tensors);
        _deltas[name] = deltas;
    }

    // ---- case folders ----

    private static FluxTransformerInputs Inputs(long batch, long txtLen, long height, long width, long seed)
    {
        long rows = height / 16, cols = width / 16;
        var g = Gen(seed);
        return new FluxTransformerInputs(
            randn([batch, rows * cols, Config.InChannels], generator: g),
            randn([batch, txtLen, Config.JointAttentionDim], generator: g),
            randn([batch, Config.PooledProjectionDim], generator: g),
            rand([batch], generator: g),
            tensor(Enumerable.Range(0, (int)batch).Select(i => 3.5f - i).ToArray()),
            FluxTestModels.ImageIds(rows, cols, Config.AxesDimsRope.Count),
            zeros(txtLen, Config.AxesDimsRope.Count));
    }

    private static Dictionary<string, object> Params(FluxTransformerInputs x, bool debug) => new()
    {
        ["batch"] = x.HiddenStates.shape[0],
        ["txt_len"] = x.EncoderHiddenStates.shape[1],
        ["seed"] = Seed,
        ["debug"] = debug,
    };

    private void WriteCase(string name, string kind, string model, string? modelConfig, IReadOnlyList<Dictionary<string, object>> loras,
        FluxTransformerInputs x, Dictionary<string, Tensor> expected, Dictionary<string, object> parameters)
    {
        var dir = Directory.CreateDirectory(Path.Combine(_root.Path, "cases", name)).FullName;
        var json = new Dictionary<string, object?>
        {
            ["name"] = name, ["kind"] = kind, ["model"] = model, ["loras"] = loras, ["params"] = parameters,
            ["tolerance"] = new Dictionary<string, double> { ["atol"] = Tol.Atol, ["rtol"] = Tol.Rtol },
        };
        if (modelConfig is not null) json["model_config"] = modelConfig;
        File.WriteAllText(Path.Combine(dir, "case.json"), JsonSerializer.Serialize(json));
        SafetensorsWriter.Save(Path.Combine(dir, "inputs.safetensors"), new Dictionary<string, Tensor>
        {
            ["hidden_states"] = x.HiddenStates, ["encoder_hidden_states"] = x.EncoderHiddenStates,
            ["pooled_projections"] = x.PooledProjections, ["timestep"] = x.Timestep, ["guidance"] = x.Guidance!,
            ["img_ids"] = x.ImageIds, ["txt_ids"] = x.TextIds,
        });
        SafetensorsWriter.Save(Path.Combine(dir, "expected.safetensors"), expected);
    }
}
