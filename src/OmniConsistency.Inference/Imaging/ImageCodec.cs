using OmniConsistency.Inference.Pipelines;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Webp;
using SixLabors.ImageSharp.Memory;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace OmniConsistency.Inference.Imaging;

/// <summary>Output encoder settings.</summary>
public sealed record ImageEncodeOptions
{
    public int JpegQuality { get; init; } = 95;
    public int WebpQuality { get; init; } = 90;
    public bool WebpLossless { get; init; }

    public static ImageEncodeOptions Default { get; } = new();
}

/// <summary>
/// Decodes untrusted PNG/JPEG/WebP uploads to RGB with EXIF orientation applied, and encodes results. Hostile input
/// (empty, truncated, not an image, declared sizes beyond <see cref="ImageLimits"/>, decompression bombs, animated
/// WebP) ends in <see cref="InvalidImageException"/> or <see cref="ImageTooLargeException"/>, never in a large
/// allocation: the header is identified first and checked against the caps, and the decoder runs on its own
/// allocator whose single-buffer limit is the configured one. Only these three formats are registered, which keeps
/// the attack surface to the decoders the service needs. Thread-safe.
/// </summary>
public sealed class ImageCodec
{
    private readonly Configuration _configuration;

    public ImageCodec(ImageLimits? limits = null)
    {
        Limits = limits ?? ImageLimits.Default;
        Limits.Validate();
        _configuration = new Configuration(new PngConfigurationModule(), new JpegConfigurationModule(), new WebpConfigurationModule())
        {
            MemoryAllocator = MemoryAllocator.Create(new MemoryAllocatorOptions
            {
                AllocationLimitMegabytes = Limits.MaxAllocationMegabytes,
                // A small pool: uploads are occasional and a long-running service should not keep decode buffers.
                MaximumPoolSizeMegabytes = 16,
            }),
        };
    }

    public ImageLimits Limits { get; }

    /// <summary>Reads the declared size without decoding pixels; throws the same typed exceptions as <see cref="Decode"/>.</summary>
    public (int Width, int Height) Identify(byte[] data)
    {
        CheckBytes(data);
        using var stream = new MemoryStream(data, writable: false);
        var info = IdentifyStream(stream);
        return (info.Width, info.Height);
    }

    /// <summary>Decodes an upload to RGB (alpha dropped as PIL's convert("RGB") does), applying EXIF orientation.</summary>
    public RgbImage Decode(byte[] data)
    {
        CheckBytes(data);
        using var stream = new MemoryStream(data, writable: false);
        var info = IdentifyStream(stream);
        CheckSize(info.Width, info.Height);
        if (EncodedImageStructure.IsAnimatedWebp(data))
            throw new InvalidImageException("Animated WebP images are not supported; upload a still image.");
        if (EncodedImageStructure.IsTruncatedJpeg(data) || EncodedImageStructure.IsTruncatedWebp(data))
            throw new InvalidImageException("The image is truncated: the file ends before its image data does.");

        stream.Position = 0;
        Image<Rgb24> image;
        try
        {
            image = Image.Load<Rgb24>(_configuration, stream);
        }
        catch (Exception e) when (IsAllocationLimit(e))
        {
            throw new ImageTooLargeException($"Decoding the image needs more than the {Limits.MaxAllocationMegabytes} MB allowed.", e);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Decoder failures on hostile bytes surface as several exception types (format, content, end of stream,
            // index errors in damaged entropy data); all mean the same to a caller: this is not a usable image.
            throw new InvalidImageException($"The image could not be decoded ({e.GetType().Name}: {e.Message}).", e);
        }

        using (image)
        {
            image.Mutate(x => x.AutoOrient());
            CheckSize(image.Width, image.Height);
            var pixels = new byte[checked(3 * image.Width * image.Height)];
            image.CopyPixelDataTo(pixels);
            return new RgbImage(image.Width, image.Height, pixels);
        }
    }

    /// <summary>Encodes an RGB image as PNG, JPEG or WebP bytes.</summary>
    public byte[] Encode(RgbImage image, ImageOutputFormat format, ImageEncodeOptions? options = null)
    {
        options ??= ImageEncodeOptions.Default;
        using var img = Image.LoadPixelData<Rgb24>(_configuration, image.Pixels, image.Width, image.Height);
        IImageEncoder encoder = format switch
        {
            ImageOutputFormat.Png => new PngEncoder { ColorType = PngColorType.Rgb, BitDepth = PngBitDepth.Bit8 },
            ImageOutputFormat.Jpeg => new JpegEncoder { Quality = options.JpegQuality },
            ImageOutputFormat.Webp => new WebpEncoder
            {
                FileFormat = options.WebpLossless ? WebpFileFormatType.Lossless : WebpFileFormatType.Lossy,
                Quality = options.WebpQuality,
            },
            _ => throw new ArgumentOutOfRangeException(nameof(format), format, "unknown output format"),
        };
        using var output = new MemoryStream();
        img.Save(output, encoder);
        return output.ToArray();
    }

    public static string ContentType(ImageOutputFormat format) => format switch
    {
        ImageOutputFormat.Png => "image/png",
        ImageOutputFormat.Jpeg => "image/jpeg",
        ImageOutputFormat.Webp => "image/webp",
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "unknown output format"),
    };

    private void CheckBytes(byte[]? data)
    {
        if (data is null || data.Length == 0) throw new InvalidImageException("The image is empty (0 bytes).");
        if (data.LongLength > Limits.MaxEncodedBytes)
            throw new ImageTooLargeException($"The image file is {data.LongLength} bytes; at most {Limits.MaxEncodedBytes} are accepted.");
    }

    private IImageInfo IdentifyStream(Stream stream)
    {
        IImageInfo? info;
        try
        {
            info = Image.Identify(_configuration, stream, out _);
        }
        catch (Exception e) when (IsAllocationLimit(e))
        {
            throw new ImageTooLargeException("Reading the image header needs more memory than allowed.", e);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidImageException($"The image header is damaged ({e.GetType().Name}: {e.Message}).", e);
        }
        if (info is null) throw new InvalidImageException("The file is not a PNG, JPEG or WebP image.");
        if (info.Width <= 0 || info.Height <= 0)
            throw new InvalidImageException($"The image declares an empty size {info.Width}×{info.Height}.");
        return info;
    }

    private void CheckSize(int width, int height)
    {
        if (width > Limits.MaxSide || height > Limits.MaxSide)
            throw new ImageTooLargeException($"The image is {width}×{height} pixels; each side may be at most {Limits.MaxSide}.");
        if ((long)width * height > Limits.MaxPixels)
            throw new ImageTooLargeException($"The image is {width}×{height} = {(long)width * height} pixels; at most {Limits.MaxPixels} are accepted.");
    }

    /// <summary>The allocator's limit, thrown directly or wrapped by ImageSharp as invalid content ("image too large").</summary>
    private static bool IsAllocationLimit(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
            if (e is InvalidMemoryOperationException) return true;
        return false;
    }
}
