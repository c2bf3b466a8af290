using System.Buffers.Binary;

namespace OmniConsistency.Inference.Imaging;

/// <summary>
/// Container-level checks ImageSharp does not make: its JPEG decoder fills a truncated scan with grey instead of
/// failing, and it would decode every frame of an animated WebP. These read markers and chunk headers only.
/// </summary>
internal static class EncodedImageStructure
{
    /// <summary>
    /// A JPEG whose marker stream ends before the EOI marker. Segments are skipped by their lengths; inside entropy-coded
    /// data 0xFF is always followed by a stuffed 0x00 or a restart marker, so the next real marker is found exactly
    /// (an EXIF thumbnail's own EOI, inside APP1, is skipped with its segment). Not a JPEG, or malformed in another way:
    /// false, and the decoder decides.
    /// </summary>
    public static bool IsTruncatedJpeg(ReadOnlySpan<byte> d)
    {
        if (d.Length < 2 || d[0] != 0xFF || d[1] != 0xD8) return false;
        int i = 2;
        while (true)
        {
            if (i >= d.Length) return true;
            if (d[i] != 0xFF) return false;
            while (i < d.Length && d[i] == 0xFF) i++; // fill bytes
            if (i >= d.Length) return true;
            byte marker = d[i++];
            if (marker == 0xD9) return false; // EOI: complete
            if (marker == 0x01 || marker is >= 0xD0 and <= 0xD8) continue; // markers without a length
            if (i + 2 > d.Length) return true;
            int length = BinaryPrimitives.ReadUInt16BigEndian(d[i..]);
            if (length < 2) return false;
            if (i + length > d.Length) return true;
            i += length;
            if (marker != 0xDA) continue;
            // Entropy-coded data after SOS runs to the next marker that is not a stuffed byte or a restart.
            while (true)
            {
                if (i + 1 >= d.Length) return true;
                if (d[i] == 0xFF && d[i + 1] != 0x00 && d[i + 1] is < 0xD0 or > 0xD7 && d[i + 1] != 0xFF) break;
                i++;
            }
        }
    }

    /// <summary>A RIFF/WEBP file shorter than its RIFF header says.</summary>
    public static bool IsTruncatedWebp(ReadOnlySpan<byte> d) =>
        IsWebp(d) && 8L + BinaryPrimitives.ReadUInt32LittleEndian(d[4..]) > d.Length;

    /// <summary>An extended WebP (first chunk VP8X) with the animation flag set.</summary>
    public static bool IsAnimatedWebp(ReadOnlySpan<byte> d) =>
        IsWebp(d) && d.Length >= 21 && d[12..16].SequenceEqual("VP8X"u8) && (d[20] & 0x02) != 0;

    private static bool IsWebp(ReadOnlySpan<byte> d) =>
        d.Length >= 12 && d[..4].SequenceEqual("RIFF"u8) && d[8..12].SequenceEqual("WEBP"u8);
}
