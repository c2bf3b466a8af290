using OmniConsistency.Inference.Lora;
using OmniConsistency.Inference.Pipelines;
using Xunit;

namespace OmniConsistency.Inference.Tests.Lora;

public class StyleCatalogTests
{
    private static void Touch(string path) => File.WriteAllBytes(path, [1, 2, 3]);

    [Fact]
    public void ListsStylesWithSidecarMetadata()
    {
        using var dir = new TempFolder();
        Touch(dir.File("ghibli.safetensors"));
        File.WriteAllBytes(dir.File("ghibli.png"), StylePreviewFileTests.Png());
        File.WriteAllText(dir.File("ghibli.json"), """
            { "display_name": "Studio Ghibli", "trigger_words": ["ghibli style", " hand-drawn "], "default_scale": 0.8,
              "description": "Soft watercolour look.", "preview": "ghibli.png" }
            """);
        Touch(dir.File("pixel-art_v2.safetensors"));
        File.WriteAllText(dir.File("notes.txt"), "not a style");
        var catalog = new StyleCatalog(new StyleCatalogOptions { Folder = dir.Path });

        Assert.Equal(["ghibli", "pixel-art_v2"], catalog.Styles.Select(s => s.Name));
        var g = catalog.Styles[0];
        Assert.Equal(new StyleInfo("ghibli", "Studio Ghibli", g.TriggerWords, 0.8, "Soft watercolour look.", Path.Combine(catalog.Folder, "ghibli.png")), g);
        Assert.Equal(["ghibli style", "hand-drawn"], g.TriggerWords);
        Assert.Equal(Path.Combine(catalog.Folder, "ghibli.png"), catalog.Entries[0].PreviewPath);
        var plain = catalog.Styles[1];
        Assert.Equal(("pixel-art_v2", 1.0, 0, (string?)null), (plain.DisplayName, plain.DefaultScale, plain.TriggerWords.Count, plain.PreviewPath));
        Assert.Empty(catalog.Problems);
        Assert.Equal(Path.Combine(catalog.Folder, "ghibli.safetensors"), catalog.Resolve("ghibli").LoraPath);
    }

    [Theory]
    [InlineData("../../etc/passwd")]
    [InlineData("..")]
    [InlineData("a/b")]
    [InlineData("a\\b")]
    [InlineData("/etc/passwd")]
    [InlineData(".hidden")]
    [InlineData("")]
    [InlineData("name with spaces")]
    [InlineData("x..y")]
    [InlineData("ghibli\0")]
    public void InvalidNamesAreRejected(string name)
    {
        using var dir = new TempFolder();
        Touch(dir.File("ghibli.safetensors"));
        var catalog = new StyleCatalog(new StyleCatalogOptions { Folder = dir.Path });
        var e = Assert.Throws<StylizationRequestException>(() => catalog.Resolve(name));
        Assert.Equal("invalid-style-name", e.ErrorType);
        Assert.False(StyleCatalog.IsValidName(name));
    }

    [Fact]
    public void UnknownAndVanishedStylesAreReported()
    {
        using var dir = new TempFolder();
        Touch(dir.File("a.safetensors"));
        var catalog = new StyleCatalog(new StyleCatalogOptions { Folder = dir.Path });
        Assert.Equal("unknown-style", Assert.Throws<StylizationRequestException>(() => catalog.Resolve("b")).ErrorType);
        File.Delete(dir.File("a.safetensors"));
        Assert.Equal("unknown-style", Assert.Throws<StylizationRequestException>(() => catalog.Resolve("a")).ErrorType);
        catalog.Refresh();
        Assert.Empty(catalog.Styles);
    }

    [Fact]
    public void WithARefreshIntervalStylesAddedOrRemovedAppearWithoutARestart()
    {
        using var dir = new TempFolder();
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
        Touch(dir.File("a.safetensors"));
        var catalog = new StyleCatalog(new StyleCatalogOptions { Folder = dir.Path, RefreshInterval = TimeSpan.FromSeconds(30), Time = clock });
        Touch(dir.File("b.safetensors"));
        File.Delete(dir.File("a.safetensors"));

        clock.Advance(TimeSpan.FromSeconds(29));
        Assert.Equal(["a"], catalog.Styles.Select(s => s.Name)); // the listing is still fresh
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(["b"], catalog.Styles.Select(s => s.Name));
        Assert.Equal(Path.Combine(catalog.Folder, "b.safetensors"), catalog.Resolve("b").LoraPath);

        // Without an interval only Refresh rescans.
        var manual = new StyleCatalog(new StyleCatalogOptions { Folder = dir.Path, Time = clock });
        Touch(dir.File("c.safetensors"));
        clock.Advance(TimeSpan.FromHours(1));
        Assert.Equal(["b"], manual.Styles.Select(s => s.Name));
        manual.Refresh();
        Assert.Equal(["b", "c"], manual.Styles.Select(s => s.Name));
    }

    [Fact]
    public void ARescanThatHitsAnUnreadableFileOrFolderKeepsTheCatalogServing()
    {
        using var dir = new TempFolder();
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
        Touch(dir.File("a.safetensors"));
        var catalog = new StyleCatalog(new StyleCatalogOptions { Folder = dir.Path, RefreshInterval = TimeSpan.FromSeconds(30), Time = clock });

        // A link loop dropped into the folder is one skipped file, not an exception out of every catalog read.
        File.CreateSymbolicLink(dir.File("loop.safetensors"), "loop.safetensors");
        Touch(dir.File("b.safetensors"));
        clock.Advance(TimeSpan.FromSeconds(30));
        Assert.Equal(["a", "b"], catalog.Styles.Select(s => s.Name));
        Assert.Contains(catalog.Problems, p => p.StartsWith("loop.safetensors", StringComparison.Ordinal));
        Assert.Equal("unknown-style", Assert.Throws<StylizationRequestException>(() => catalog.Resolve("loop")).ErrorType);
        // A listed style turned into a loop before the next scan: unknown at resolve time, not an IOException.
        File.Delete(dir.File("b.safetensors"));
        File.CreateSymbolicLink(dir.File("b.safetensors"), "b.safetensors");
        Assert.Equal("unknown-style", Assert.Throws<StylizationRequestException>(() => catalog.Resolve("b")).ErrorType);
        File.Delete(dir.File("b.safetensors"));
        Touch(dir.File("b.safetensors"));

        // The folder briefly gone (a volume remount): the previous listing stays in use, the next interval rescans.
        var moved = dir.Path + "-moved";
        Directory.Move(dir.Path, moved);
        try
        {
            clock.Advance(TimeSpan.FromSeconds(30));
            Assert.Equal(["a", "b"], catalog.Styles.Select(s => s.Name));
        }
        finally
        {
            Directory.Move(moved, dir.Path);
        }
        Touch(dir.File("c.safetensors"));
        clock.Advance(TimeSpan.FromSeconds(30));
        Assert.Equal(["a", "b", "c"], catalog.Styles.Select(s => s.Name));
    }

    [Fact]
    public void SymlinksOutOfTheFolderAreRefusedAndInsideAccepted()
    {
        using var dir = new TempFolder();
        using var outside = new TempFolder();
        Touch(outside.File("secret.safetensors"));
        Touch(dir.File("real.safetensors"));
        Directory.CreateDirectory(dir.File("sub"));
        Touch(dir.File("sub/nested.safetensors"));
        File.CreateSymbolicLink(dir.File("escape.safetensors"), outside.File("secret.safetensors"));
        File.CreateSymbolicLink(dir.File("alias.safetensors"), "real.safetensors");
        File.CreateSymbolicLink(dir.File("nested.safetensors"), dir.File("sub/nested.safetensors"));
        Directory.CreateSymbolicLink(dir.File("outdir"), outside.Path);
        File.CreateSymbolicLink(dir.File("viadir.safetensors"), dir.File("outdir/secret.safetensors"));
        File.WriteAllText(outside.File("meta.json"), """{ "display_name": "leak" }""");
        File.CreateSymbolicLink(dir.File("real.json"), outside.File("meta.json"));

        var catalog = new StyleCatalog(new StyleCatalogOptions { Folder = dir.Path });
        Assert.Equal(["alias", "nested", "real"], catalog.Styles.Select(s => s.Name));
        Assert.Equal("real", catalog.Styles.Single(s => s.Name == "real").DisplayName); // the sidecar link was refused
        Assert.Contains(catalog.Problems, p => p.StartsWith("escape.safetensors", StringComparison.Ordinal));
        Assert.Contains(catalog.Problems, p => p.StartsWith("viadir.safetensors", StringComparison.Ordinal));
        Assert.Contains(catalog.Problems, p => p.StartsWith("real.json", StringComparison.Ordinal));
        Assert.Throws<StylizationRequestException>(() => catalog.Resolve("escape"));
        Assert.Equal(Path.Combine(catalog.Folder, "real.safetensors"), catalog.Resolve("alias").LoraPath);

        // A link retargeted outside after the scan is refused at resolve time.
        File.Delete(dir.File("alias.safetensors"));
        File.CreateSymbolicLink(dir.File("alias.safetensors"), outside.File("secret.safetensors"));
        Assert.Equal("unknown-style", Assert.Throws<StylizationRequestException>(() => catalog.Resolve("alias")).ErrorType);
    }

    [Fact]
    public void BadSidecarsAndFileNamesAreReportedNotFatal()
    {
        using var dir = new TempFolder();
        Touch(dir.File("a.safetensors"));
        File.WriteAllText(dir.File("a.json"), "{ not json");
        Touch(dir.File("b.safetensors"));
        File.WriteAllText(dir.File("b.json"), """{ "display_name": "", "default_scale": 1e9, "trigger_words": [1, 2], "preview": "../x.png", "description": "ok" }""");
        Touch(dir.File("bad name.safetensors"));
        var catalog = new StyleCatalog(new StyleCatalogOptions { Folder = dir.Path });
        Assert.Equal(["a", "b"], catalog.Styles.Select(s => s.Name));
        var b = catalog.Entries[1];
        Assert.Equal(("b", 1.0, 0, "ok", (string?)null), (b.DisplayName, b.DefaultScale, b.TriggerWords.Count, b.Description, b.PreviewPath));
        Assert.Equal(6, catalog.Problems.Count); // a.json, 4 fields of b.json, "bad name"
    }
}
