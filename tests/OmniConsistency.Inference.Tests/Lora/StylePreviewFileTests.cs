using OmniConsistency.Inference.Lora;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;

namespace OmniConsistency.Inference.Tests.Lora;

/// <summary>Style previews: the catalog keeps only servable ones, and <see cref="StylePreviewFile"/> checks them again when read.</summary>
public class StylePreviewFileTests
{
    public static byte[] Png(int w = 12, int h = 9) => Encode(w, h, (i, s) => i.SaveAsPng(s));
    public static byte[] Jpeg(int w = 12, int h = 9) => Encode(w, h, (i, s) => i.SaveAsJpeg(s));
    public static byte[] Webp(int w = 12, int h = 9) => Encode(w, h, (i, s) => i.SaveAsWebp(s));
    public static byte[] Gif(int w = 12, int h = 9) => Encode(w, h, (i, s) => i.SaveAsGif(s));

    private static byte[] Encode(int w, int h, Action<Image<Rgb24>, Stream> save)
    {
        using var image = new Image<Rgb24>(w, h);
        for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            image[x, y] = new Rgb24((byte)(20 * x), (byte)(20 * y), 7);
        using var stream = new MemoryStream();
        save(image, stream);
        return stream.ToArray();
    }

    private static StyleCatalog Catalog(TempFolder dir, string style, string preview, byte[]? bytes)
    {
        File.WriteAllBytes(dir.File(style + ".safetensors"), [0]);
        File.WriteAllText(dir.File(style + ".json"), $$"""{ "preview": "{{preview}}" }""");
        if (bytes is not null) File.WriteAllBytes(dir.File(preview), bytes);
        return new StyleCatalog(new StyleCatalogOptions { Folder = dir.Path });
    }

    [Theory]
    [InlineData("p.png", "png", "image/png")]
    [InlineData("p.png", "jpeg", "image/jpeg")] // the content decides, not the extension
    [InlineData("p.JPG", "jpeg", "image/jpeg")]
    [InlineData("p.jpeg", "webp", "image/webp")]
    [InlineData("p.webp", "webp", "image/webp")]
    public void ServablePreviewsAreKeptAndReadWithTheirRealContentType(string file, string format, string contentType)
    {
        using var dir = new TempFolder();
        var bytes = format switch { "png" => Png(), "jpeg" => Jpeg(), _ => Webp() };
        var catalog = Catalog(dir, "s", file, bytes);
        Assert.Empty(catalog.Problems);
        var path = Assert.Single(catalog.Styles).PreviewPath!;
        Assert.Equal(Path.Combine(catalog.Folder, file), path);
        Assert.Equal(contentType, StylePreviewFile.Identify(path));
        var image = StylePreviewFile.Read(path);
        Assert.Equal(bytes, image.Bytes);
        Assert.Equal((contentType, 12, 9), (image.ContentType, image.Width, image.Height));
    }

    [Theory]
    [InlineData("p.png", "gif")]        // a format the service does not serve
    [InlineData("p.png", "text")]
    [InlineData("p.webp", "truncated")]
    [InlineData("p.png", "empty")]
    [InlineData("p.png", "missing")]
    [InlineData("p.gif", "gif")]        // extension not offered
    [InlineData("../p.png", "png")]
    [InlineData("sub/p.png", "png")]
    [InlineData("/etc/passwd", "missing")]
    [InlineData(".p.png", "png")]
    public void UnservablePreviewsAreReportedAndDropped(string file, string content)
    {
        using var dir = new TempFolder();
        Directory.CreateDirectory(dir.File("sub"));
        byte[]? bytes = content switch
        {
            "gif" => Gif(), "text" => "hello"u8.ToArray(), "truncated" => Webp()[..20], "empty" => [], "missing" => null, _ => Png(),
        };
        var target = Path.GetFullPath(dir.File(file));
        if (bytes is not null && target.StartsWith(dir.Path, StringComparison.Ordinal)) File.WriteAllBytes(target, bytes);
        var catalog = Catalog(dir, "s", file, null);
        Assert.Null(Assert.Single(catalog.Styles).PreviewPath);
        Assert.Single(catalog.Problems, p => p.StartsWith("s.json: preview", StringComparison.Ordinal));
    }

    [Fact]
    public void LinksAreResolvedOnEveryRead()
    {
        using var dir = new TempFolder();
        using var outside = new TempFolder();
        File.WriteAllBytes(outside.File("secret.png"), Png());
        File.WriteAllBytes(dir.File("real.webp"), Webp());
        File.CreateSymbolicLink(dir.File("alias.png"), "real.webp");
        File.CreateSymbolicLink(dir.File("out.png"), outside.File("secret.png"));
        Directory.CreateSymbolicLink(dir.File("outdir"), outside.Path);
        File.CreateSymbolicLink(dir.File("via.png"), dir.File("outdir/secret.png"));
        File.WriteAllBytes(dir.File("a.safetensors"), [0]);
        File.WriteAllText(dir.File("a.json"), """{ "preview": "alias.png" }""");
        File.WriteAllBytes(dir.File("b.safetensors"), [0]);
        File.WriteAllText(dir.File("b.json"), """{ "preview": "out.png" }""");
        File.WriteAllBytes(dir.File("c.safetensors"), [0]);
        File.WriteAllText(dir.File("c.json"), """{ "preview": "via.png" }""");
        var catalog = new StyleCatalog(new StyleCatalogOptions { Folder = dir.Path });
        var a = catalog.Styles.Single(s => s.Name == "a").PreviewPath!;
        Assert.Equal(Path.Combine(catalog.Folder, "alias.png"), a); // kept unresolved, so the link is followed again when served
        Assert.Equal("image/webp", StylePreviewFile.Read(a).ContentType);
        Assert.Null(catalog.Styles.Single(s => s.Name == "b").PreviewPath);
        Assert.Null(catalog.Styles.Single(s => s.Name == "c").PreviewPath);
        Assert.Contains(catalog.Problems, p => p.StartsWith("b.json: preview ignored", StringComparison.Ordinal) && p.Contains("outside"));

        // Retargeted out of the folder after the scan: refused when read.
        File.Delete(dir.File("alias.png"));
        File.CreateSymbolicLink(dir.File("alias.png"), outside.File("secret.png"));
        Assert.Contains("outside", Assert.Throws<StylePreviewUnavailableException>(() => StylePreviewFile.Read(a)).Message);
    }

    [Fact]
    public void AStyleFolderSwappedForALinkAfterTheScanIsRefused()
    {
        using var root = new TempFolder();
        var styles = Directory.CreateDirectory(root.File("styles")).FullName;
        File.WriteAllBytes(Path.Combine(styles, "s.safetensors"), [0]);
        File.WriteAllText(Path.Combine(styles, "s.json"), """{ "preview": "p.png" }""");
        File.WriteAllBytes(Path.Combine(styles, "p.png"), Png());
        var path = Assert.Single(new StyleCatalog(new StyleCatalogOptions { Folder = styles }).Styles).PreviewPath!;
        Assert.Equal("image/png", StylePreviewFile.Read(path).ContentType);

        Directory.Move(styles, root.File("moved"));
        Directory.CreateSymbolicLink(styles, root.File("moved"));
        Assert.Contains("outside", Assert.Throws<StylePreviewUnavailableException>(() => StylePreviewFile.Read(path)).Message);
    }

    [Fact]
    public void ReadRefusesWhatChangedSinceTheScanAndPathsThatAreNotPreviews()
    {
        using var dir = new TempFolder();
        var catalog = Catalog(dir, "s", "p.png", Png());
        var path = catalog.Styles[0].PreviewPath!;
        File.WriteAllText(path, "no longer an image");
        Assert.Contains("not a PNG, JPEG or WebP", Assert.Throws<StylePreviewUnavailableException>(() => StylePreviewFile.Read(path)).Message);
        using (var big = new FileStream(path, FileMode.Create)) big.SetLength(StylePreviewFile.MaxBytes + 1);
        Assert.Contains("larger than", Assert.Throws<StylePreviewUnavailableException>(() => StylePreviewFile.Read(path)).Message);
        File.Delete(path);
        Assert.Contains("does not exist", Assert.Throws<StylePreviewUnavailableException>(() => StylePreviewFile.Read(path)).Message);

        foreach (var bad in new[] { "p.png", "../p.png", dir.File("p.txt"), dir.File("..") })
            Assert.Throws<StylePreviewUnavailableException>(() => StylePreviewFile.Read(bad));
    }
}
