using System.Buffers.Binary;
using System.IO.Compression;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace OmniConsistency.Api.Tests;

public static class TestImages
{
    /// <summary>A small gradient photo.</summary>
    public static byte[] Png(int width = 64, int height = 48, byte seed = 0)
    {
        using var image = new Image<Rgb24>(width, height);
        for (var y = 0; y < height; y++)
            for (var x = 0; x < width; x++)
                image[x, y] = new Rgb24((byte)(x * 255 / width), (byte)(y * 255 / height), (byte)(seed + x + y));
        using var s = new MemoryStream();
        image.SaveAsPng(s);
        return s.ToArray();
    }

    /// <summary>Random pixels: does not compress, so the file is about width × height × 3 bytes.</summary>
    public static byte[] NoisePng(int width, int height)
    {
        var rng = new Random(7);
        using var image = new Image<Rgb24>(width, height);
        for (var y = 0; y < height; y++)
            for (var x = 0; x < width; x++)
                image[x, y] = new Rgb24((byte)rng.Next(256), (byte)rng.Next(256), (byte)rng.Next(256));
        using var s = new MemoryStream();
        image.SaveAsPng(s);
        return s.ToArray();
    }

    /// <summary>A valid PNG header declaring a huge image over a tiny compressed body: a decompression bomb.</summary>
    public static byte[] DecompressionBombPng(int width = 60000, int height = 60000)
    {
        using var s = new MemoryStream();
        s.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = 8; ihdr[9] = 2; // 8-bit RGB
        Chunk(s, "IHDR", ihdr);
        using (var z = new MemoryStream())
        {
            using (var zl = new ZLibStream(z, CompressionLevel.SmallestSize, leaveOpen: true))
                zl.Write(new byte[1 << 20]); // 1 MiB of zeros: compresses to about a kilobyte
            Chunk(s, "IDAT", z.ToArray());
        }
        Chunk(s, "IEND", []);
        return s.ToArray();
    }

    private static void Chunk(Stream s, string type, byte[] data)
    {
        Span<byte> len = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(len, data.Length);
        s.Write(len);
        var typeBytes = System.Text.Encoding.ASCII.GetBytes(type);
        s.Write(typeBytes);
        s.Write(data);
        Span<byte> crc = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(crc, Crc32([.. typeBytes, .. data]));
        s.Write(crc);
    }

    private static uint Crc32(byte[] bytes)
    {
        var crc = 0xFFFFFFFFu;
        foreach (var b in bytes)
        {
            crc ^= b;
            for (var k = 0; k < 8; k++) crc = (crc & 1) != 0 ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
        }
        return ~crc;
    }

    /// <summary>The first bytes of a real PNG with the rest cut off.</summary>
    public static byte[] TruncatedPng() => Png(64, 64)[..60];
}
