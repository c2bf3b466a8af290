using OmniConsistency.Inference.IO;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;

namespace OmniConsistency.Inference.BuiltIn;

/// <summary>
/// The demo style's preview image, drawn from the demo style's own LoRA file: the weight update ΔW = B·A of the first
/// double block's query, key and value projections as the red, green and blue channels (each scaled by its largest
/// magnitude, mid-grey = 0), enlarged with square pixels to at least <see cref="MinSide"/>. The demo style has random
/// weights, so a picture of what it changes is the honest preview. Computed in double precision in managed code from
/// the stored float32 values and PNG-encoded without metadata, so every machine writes the same bytes.
/// </summary>
internal static class DemoStylePreview
{
    public const int MinSide = 128;
    private static readonly string[] Channels = ["to_q", "to_k", "to_v"];
    private const string Block = "transformer.transformer_blocks.0.attn.";

    /// <summary>Writes the preview PNG of the diffusers/peft-layout LoRA at <paramref name="loraPath"/> to <paramref name="pngPath"/>.</summary>
    public static void Write(string loraPath, string pngPath)
    {
        using var lora = SafetensorsFile.Open(loraPath);
        var deltas = Channels.Select(c => Delta(lora, Block + c)).ToArray();
        int rows = deltas[0].GetLength(0), cols = deltas[0].GetLength(1);
        if (deltas.Any(d => d.GetLength(0) != rows || d.GetLength(1) != cols))
            throw new InvalidOperationException($"The demo style's {string.Join("/", Channels)} updates differ in shape.");
        var scale = Math.Max(1, (MinSide + Math.Max(rows, cols) - 1) / Math.Max(rows, cols));
        var peaks = deltas.Select(MaxAbs).ToArray();

        using var image = new Image<Rgb24>(cols * scale, rows * scale);
        for (int y = 0; y < image.Height; y++)
        for (int x = 0; x < image.Width; x++)
        {
            int r = y / scale, c = x / scale;
            image[x, y] = new Rgb24(Byte(deltas[0][r, c], peaks[0]), Byte(deltas[1][r, c], peaks[1]), Byte(deltas[2][r, c], peaks[2]));
        }
        image.Metadata.ExifProfile = null;
        using var file = File.Create(pngPath);
        image.SaveAsPng(file, new PngEncoder { ColorType = PngColorType.Rgb, BitDepth = PngBitDepth.Bit8, CompressionLevel = PngCompressionLevel.BestCompression });
    }

    /// <summary>B·A of one LoRA module ([out, rank]·[rank, in] → [out, in]).</summary>
    private static double[,] Delta(SafetensorsFile lora, string module)
    {
        var (a, aShape) = Read(lora, module + ".lora_A.weight");
        var (b, bShape) = Read(lora, module + ".lora_B.weight");
        if (aShape.Length != 2 || bShape.Length != 2 || aShape[0] != bShape[1])
            throw new InvalidOperationException($"'{module}' is not a LoRA pair: A [{string.Join(",", aShape)}], B [{string.Join(",", bShape)}].");
        int rank = (int)aShape[0], inputs = (int)aShape[1], outputs = (int)bShape[0];
        var delta = new double[outputs, inputs];
        for (int o = 0; o < outputs; o++)
        for (int i = 0; i < inputs; i++)
        {
            double sum = 0;
            for (int k = 0; k < rank; k++) sum += (double)b[o * rank + k] * a[k * inputs + i];
            delta[o, i] = sum;
        }
        return delta;
    }

    private static (float[] Values, long[] Shape) Read(SafetensorsFile file, string name)
    {
        using var tensor = file.Load(name, TorchSharp.torch.ScalarType.Float32);
        return (tensor.data<float>().ToArray(), tensor.shape);
    }

    private static double MaxAbs(double[,] values)
    {
        double max = 0;
        foreach (var v in values) max = Math.Max(max, Math.Abs(v));
        return max;
    }

    private static byte Byte(double value, double peak) =>
        (byte)Math.Clamp(Math.Round(127.5 + 127.5 * (peak > 0 ? value / peak : 0), MidpointRounding.ToEven), 0, 255);
}
