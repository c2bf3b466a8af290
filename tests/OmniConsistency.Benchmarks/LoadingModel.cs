using OmniConsistency.Inference.Nn;
using TorchSharp;
using static TorchSharp.torch;

namespace OmniConsistency.Benchmarks;

/// <summary>
/// A stack of blocks with the parameter names and shapes of FLUX.1-dev's single transformer blocks
/// (D = 3072: q/k/v [D,D], proj_mlp [4D,D], proj_out [D,5D], norm.linear [3D,D], RMS scales [128]),
/// about 283 MB per block in bf16: a realistic mix of large and tiny tensors for the loading benchmark.
/// </summary>
internal sealed class LoadingModel : nn.Module<Tensor, Tensor>
{
    public const long Dim = 3072;
    public const long HeadDim = 128;

    public TorchSharp.Modules.ModuleList<nn.Module<Tensor, Tensor>> single_transformer_blocks;

    public LoadingModel(int blocks, ParameterFactory f) : base(nameof(LoadingModel))
    {
        single_transformer_blocks = nn.ModuleList<nn.Module<Tensor, Tensor>>(
            Enumerable.Range(0, blocks).Select(_ => (nn.Module<Tensor, Tensor>)new Block(f)).ToArray());
        RegisterComponents();
    }

    /// <summary>Bytes one block takes at <paramref name="elementSize"/> bytes per parameter.</summary>
    public static long BlockBytes(int elementSize)
    {
        long d = Dim;
        long parameters = 3 * (d * d + d) + 2 * HeadDim + (4 * d * d + 4 * d) + (5 * d * d + d) + (3 * d * d + 3 * d);
        return parameters * elementSize;
    }

    public override Tensor forward(Tensor x) => throw new NotSupportedException("loading benchmark model only");

    private sealed class Block : nn.Module<Tensor, Tensor>
    {
        public Attention attn;
        public Linear proj_mlp;
        public Linear proj_out;
        public AdaNorm norm;

        public Block(ParameterFactory f) : base(nameof(Block))
        {
            attn = new Attention(f);
            proj_mlp = new Linear(Dim, 4 * Dim, f);
            proj_out = new Linear(5 * Dim, Dim, f);
            norm = new AdaNorm(f);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => throw new NotSupportedException();
    }

    private sealed class Attention : nn.Module<Tensor, Tensor>
    {
        public Linear to_q, to_k, to_v;
        public LayerNorm norm_q, norm_k;

        public Attention(ParameterFactory f) : base(nameof(Attention))
        {
            to_q = new Linear(Dim, Dim, f);
            to_k = new Linear(Dim, Dim, f);
            to_v = new Linear(Dim, Dim, f);
            norm_q = new LayerNorm(HeadDim, f, hasBias: false);
            norm_k = new LayerNorm(HeadDim, f, hasBias: false);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => throw new NotSupportedException();
    }

    private sealed class AdaNorm : nn.Module<Tensor, Tensor>
    {
        public Linear linear;

        public AdaNorm(ParameterFactory f) : base(nameof(AdaNorm))
        {
            linear = new Linear(Dim, 3 * Dim, f);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => throw new NotSupportedException();
    }
}
