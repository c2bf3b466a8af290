using OmniConsistency.Inference.Pipelines;

namespace OmniConsistency.Inference.Imaging;

/// <summary>The uploaded bytes are not a usable PNG, JPEG or WebP image (empty, truncated, corrupt, another format, animated).</summary>
public sealed class InvalidImageException(string message, Exception? inner = null)
    : StylizationRequestException("invalid-image", message, inner);

/// <summary>The image is larger than the configured <see cref="ImageLimits"/> (bytes, side, pixels or decoding memory).</summary>
public sealed class ImageTooLargeException(string message, Exception? inner = null)
    : StylizationRequestException("image-too-large", message, inner);
