using OmniConsistency.Inference.Nn;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Flux;

/// <summary>Double-stream block (<c>transformer_blocks.N</c>): image and text streams with their own weights, joint attention.</summary>
public sealed class FluxTransformerBlock : nn.Module
{
    public AdaLayerNormZero norm1;
    public AdaLayerNormZero norm1_context;
    public FluxJointAttention attn;
    public FeedForward ff;
    public FeedForward ff_context;

    private readonly long _dim;

    public FluxTransformerBlock(FluxTransformerConfig config, ParameterFactory f) : base(nameof(FluxTransformerBlock))
    {
        _dim = config.InnerDim;
        norm1 = new AdaLayerNormZero(_dim, f);
        norm1_context = new AdaLayerNormZero(_dim, f);
        attn = new FluxJointAttention(config, f);
        ff = new FeedForward(_dim, config.MlpHiddenDim, f);
        ff_context = new FeedForward(_dim, config.MlpHiddenDim, f);
        RegisterComponents();
    }

    public (Tensor Image, Tensor Text) Forward(Tensor image, Tensor text, Tensor temb, RotaryTable rope, int layer, IFluxAttentionExtension? extension)
    {
        using var scope = NewDisposeScope();
        var (imageNormed, gate, shiftMlp, scaleMlp, gateMlp) = norm1.Forward(image, temb);
        var (textNormed, cGate, cShiftMlp, cScaleMlp, cGateMlp) = norm1_context.Forward(text, temb);
        var (imageAttn, textAttn) = attn.Forward(imageNormed, textNormed, rope, layer, extension);

        image = image + gate.unsqueeze(1) * imageAttn;
        var imageFf = ff.forward(FluxOps.Modulate(FluxOps.LayerNorm(image, _dim), scaleMlp, shiftMlp));
        image = image + gateMlp.unsqueeze(1) * imageFf;

        text = text + cGate.unsqueeze(1) * textAttn;
        var textFf = ff_context.forward(FluxOps.Modulate(FluxOps.LayerNorm(text, _dim), cScaleMlp, cShiftMlp));
        text = text + cGateMlp.unsqueeze(1) * textFf;
        if (text.dtype == ScalarType.Float16) text = text.clamp(-65504, 65504);
        return (image.MoveToOuterDisposeScope(), text.MoveToOuterDisposeScope());
    }
}

/// <summary>Single-stream block (<c>single_transformer_blocks.N</c>): one sequence [text; image], attention and MLP in parallel.</summary>
public sealed class FluxSingleTransformerBlock : nn.Module
{
    public AdaLayerNormZeroSingle norm;
    public Linear proj_mlp;
    public FluxSingleAttention attn;
    public Linear proj_out;

    public FluxSingleTransformerBlock(FluxTransformerConfig config, ParameterFactory f) : base(nameof(FluxSingleTransformerBlock))
    {
        long dim = config.InnerDim, mlp = config.MlpHiddenDim;
        norm = new AdaLayerNormZeroSingle(dim, f);
        proj_mlp = new Linear(dim, mlp, f);
        attn = new FluxSingleAttention(config, f);
        proj_out = new Linear(dim + mlp, dim, f);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, long textLength, Tensor temb, RotaryTable rope, int layer, IFluxAttentionExtension? extension)
    {
        using var scope = NewDisposeScope();
        var (normed, gate) = norm.Forward(x, temb);
        var mlp = FluxOps.GeluTanh(proj_mlp.forward(normed));
        var attnOut = attn.Forward(normed, textLength, rope, layer, extension);
        var result = x + gate.unsqueeze(1) * proj_out.forward(cat([attnOut, mlp], 2));
        if (result.dtype == ScalarType.Float16) result = result.clamp(-65504, 65504);
        return result.MoveToOuterDisposeScope();
    }
}
