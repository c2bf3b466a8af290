using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Webp;

namespace OmniConsistency.Inference.Lora;

/// <summary>A style's preview image as served: its bytes and the content type of its actual format.</summary>
public sealed record StylePreviewImage(byte[] Bytes, string ContentType, int Width, int Height);

/// <summary>A preview that can't be served: gone, linked out of its folder, empty, too large or not a PNG/JPEG/WebP image.</summary>
public sealed class StylePreviewUnavailableException(string message, Exception? inner = null) : IOException(message, inner);

/// <summary>
/// Checks and reads style preview images. A preview is a file directly in its style folder, as
/// <see cref="StyleEntry.PreviewPath"/> / <see cref="Pipelines.StyleInfo.PreviewPath"/> give it. It is checked again on
/// every read because the folder can change after a scan: the real path (links resolved) must still lie in that folder,
/// the file must be non-empty and at most <see cref="MaxBytes"/>, and its content must be PNG, JPEG or WebP as ImageSharp
/// identifies it from the header (the extension only preselects candidates; the content type comes from the content).
/// </summary>
public static class StylePreviewFile
{
    public const long MaxBytes = 16L * 1024 * 1024;
    private static readonly string[] Extensions = [".png", ".jpg", ".jpeg", ".webp"];
    // Only the three formats the service speaks: a GIF or BMP renamed .png is not a preview.
    private static readonly Configuration Formats = new(new PngConfigurationModule(), new JpegConfigurationModule(), new WebpConfigurationModule());

    public static bool HasPreviewExtension(string fileName) => Extensions.Contains(Path.GetExtension(fileName).ToLowerInvariant());

    /// <summary>Checks the preview and identifies its format from the header only (cheap: for catalog scans).</summary>
    /// <returns>The content type (image/png, image/jpeg or image/webp).</returns>
    /// <exception cref="StylePreviewUnavailableException">What is wrong with it.</exception>
    public static string Identify(string previewPath)
    {
        var real = Locate(previewPath);
        try
        {
            using var stream = new FileStream(real, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, bufferSize: 4096);
            return ContentType(stream, Path.GetFileName(previewPath)).ContentType;
        }
        catch (Exception e) when (e is (IOException or UnauthorizedAccessException) and not StylePreviewUnavailableException)
        {
            throw new StylePreviewUnavailableException($"'{Path.GetFileName(previewPath)}' is not readable ({e.Message}).", e);
        }
    }

    /// <summary>Checks and reads the whole preview (at most <see cref="MaxBytes"/>), identifying its format from these bytes.</summary>
    /// <exception cref="StylePreviewUnavailableException">What is wrong with it.</exception>
    public static StylePreviewImage Read(string previewPath)
    {
        var real = Locate(previewPath);
        var name = Path.GetFileName(previewPath);
        byte[] bytes;
        try
        {
            using var stream = new FileStream(real, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, bufferSize: 1);
            // The file may have grown since Locate looked: read at most one byte past the limit.
            using var buffer = new MemoryStream();
            var chunk = new byte[81920];
            int n;
            while ((n = stream.Read(chunk, 0, (int)Math.Min(chunk.Length, MaxBytes + 1 - buffer.Length))) > 0)
                buffer.Write(chunk, 0, n);
            if (buffer.Length > MaxBytes) throw TooLarge(name);
            bytes = buffer.ToArray();
        }
        catch (Exception e) when (e is (IOException or UnauthorizedAccessException) and not StylePreviewUnavailableException)
        {
            throw new StylePreviewUnavailableException($"'{name}' is not readable ({e.Message}).", e);
        }
        using var memory = new MemoryStream(bytes, writable: false);
        var (contentType, width, height) = ContentType(memory, name);
        return new StylePreviewImage(bytes, contentType, width, height);
    }

    /// <summary>The real path of the preview after the containment, name and size checks.</summary>
    private static string Locate(string previewPath)
    {
        var name = Path.GetFileName(previewPath);
        var folder = Path.GetDirectoryName(previewPath);
        // previewPath is the catalog's real folder + a validated file name; anything else is refused outright.
        if (!Path.IsPathFullyQualified(previewPath) || string.IsNullOrEmpty(folder) || !StyleCatalog.IsValidName(name) || !HasPreviewExtension(name))
            throw new StylePreviewUnavailableException($"'{name}' is not a preview file name (a .png/.jpg/.jpeg/.webp file directly in the style folder).");
        string real;
        try
        {
            real = SafePaths.RealPath(previewPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new StylePreviewUnavailableException($"'{name}' can't be resolved ({e.Message}).", e);
        }
        if (!SafePaths.IsInside(real, folder)) throw new StylePreviewUnavailableException($"'{name}' links outside the style folder.");
        var info = new FileInfo(real);
        if (!info.Exists) throw new StylePreviewUnavailableException($"'{name}' does not exist.");
        // Devices and pipes report length 0: they are refused here, before anything is opened.
        if (info.Length == 0) throw new StylePreviewUnavailableException($"'{name}' is empty.");
        if (info.Length > MaxBytes) throw TooLarge(name);
        return real;
    }

    private static (string ContentType, int Width, int Height) ContentType(Stream stream, string name)
    {
        IImageInfo? info;
        SixLabors.ImageSharp.Formats.IImageFormat? format;
        try
        {
            info = Image.Identify(Formats, stream, out format);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new StylePreviewUnavailableException($"'{name}' has a damaged image header ({e.Message}).", e);
        }
        if (info is null || format is null) throw new StylePreviewUnavailableException($"'{name}' is not a PNG, JPEG or WebP image.");
        if (info.Width <= 0 || info.Height <= 0) throw new StylePreviewUnavailableException($"'{name}' declares an empty size {info.Width}×{info.Height}.");
        return (format.DefaultMimeType, info.Width, info.Height);
    }

    private static StylePreviewUnavailableException TooLarge(string name) => new($"'{name}' is larger than {MaxBytes} bytes.");
}
