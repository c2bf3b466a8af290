using OmniConsistency.Inference.TextEncoders;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Pipelines;

/// <summary>The common inputs of a FLUX generation (prompt, size, schedule).</summary>
public record FluxGenerationInputs
{
    /// <summary>The CLIP prompt (and the T5 prompt unless <see cref="Prompt2"/> is set).</summary>
    public required string Prompt { get; init; }
    public string? Prompt2 { get; init; }
    /// <summary>Output size in pixels; the latent grid floors each side to a multiple of 16.</summary>
    public required int Height { get; init; }
    public required int Width { get; init; }
    public int Steps { get; init; } = 25;
    public double GuidanceScale { get; init; } = 3.5;
    /// <summary>T5 tokens (FLUX: 512, which OmniConsistency always uses).</summary>
    public int MaxSequenceLength { get; init; } = PromptEncoder.MaxSequenceLengthLimit;
    /// <summary>Identifies what is attached to the text encoders for this generation and changes their output (style
    /// LoRAs' text-encoder adapters: which, at what weight, how applied); part of the prompt-cache key. Null: the
    /// encoders as loaded. Whoever attaches such adapters must set it, or a cache would serve embeddings without them.</summary>
    public string? TextEncoderState { get; init; }
}

/// <summary>OmniConsistency's inputs: a FLUX generation conditioned on a square condition image.</summary>
public sealed record OmniConsistencyInputs : FluxGenerationInputs
{
    /// <summary>The condition image [1, 3, S, S] in [-1, 1] (<see cref="Imaging.ConditionImage.Prepare"/>); S = cond_size, a multiple of 16.</summary>
    public required Tensor ConditionImage { get; init; }
    /// <summary>The consistency LoRA multiplier (upstream lora_weights[0]).</summary>
    public double ConsistencyWeight { get; init; } = 1.0;
    /// <summary>Warm up without the text tokens (spec §8.8): same bank up to rounding, cheaper; false keeps upstream's form.</summary>
    public bool TextFreeWarmup { get; init; }
}

/// <summary>The image of one generation and what the tokenizers cut off. Owns <see cref="Image"/>.</summary>
public sealed class FluxGenerationOutput(Tensor image, TokenizationResult clipTokens, TokenizationResult t5Tokens) : IDisposable
{
    /// <summary>[1, 3, H, W] in [0, 1], float32 on the CPU (the reference's output_type="pt" values, before 8-bit rounding).</summary>
    public Tensor Image { get; } = image;
    public TokenizationResult ClipTokens { get; } = clipTokens;
    public TokenizationResult T5Tokens { get; } = t5Tokens;

    /// <summary>One line per tokenizer that truncated the prompt, naming what was cut (for the result's warnings).</summary>
    public IReadOnlyList<string> TruncationWarnings()
    {
        var warnings = new List<string>();
        if (ClipTokens.Truncated)
            warnings.Add($"The prompt is longer than CLIP's {ClipTokens.MaxLength} tokens; {ClipTokens.DroppedTokenCount} token(s) were ignored by CLIP: \"{ClipTokens.DroppedText}\".");
        if (T5Tokens.Truncated)
            warnings.Add($"The prompt is longer than T5's {T5Tokens.MaxLength} tokens; {T5Tokens.DroppedTokenCount} token(s) were ignored: \"{T5Tokens.DroppedText}\".");
        return warnings;
    }

    public void Dispose() => Image.Dispose();
}

/// <summary>Progress phase names reported through <see cref="StylizationProgress.Phase"/>.</summary>
public static class GenerationPhases
{
    public const string EncodingPrompt = "encoding-prompt";
    public const string EncodingCondition = "encoding-condition";
    public const string Warmup = "warmup";
    /// <summary>Reported once when the denoising loop starts (Step = 0, after the warm-up) and after each step (Step = 1..TotalSteps).</summary>
    public const string Denoising = "denoising";
    public const string Decoding = "decoding";
}
