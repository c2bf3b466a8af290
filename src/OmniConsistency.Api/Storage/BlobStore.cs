using Microsoft.Extensions.Options;
using OmniConsistency.Api.Options;

namespace OmniConsistency.Api.Storage;

/// <summary>Where input photos and result images live, by name. The filesystem one is the default; an object store can replace it.</summary>
public interface IBlobStore
{
    Task WriteAsync(string name, ReadOnlyMemory<byte> data, CancellationToken ct);
    /// <summary>Null when the blob does not exist.</summary>
    Stream? OpenRead(string name);
    Task<byte[]> ReadAllAsync(string name, CancellationToken ct);
    void Delete(string name);
}

public sealed class FileBlobStore : IBlobStore
{
    private readonly string _root;

    public FileBlobStore(IOptions<StorageOptions> options)
    {
        _root = Path.Combine(options.Value.DataPath, "blobs");
        Directory.CreateDirectory(_root);
    }

    private string PathOf(string name)
    {
        // Names are made by the service ("inputs/<id>", "results/<id>.png"); refuse anything that could leave the root.
        if (name.Length == 0 || name.Contains("..", StringComparison.Ordinal) || Path.IsPathRooted(name))
            throw new ArgumentException($"Invalid blob name '{name}'.", nameof(name));
        return Path.Combine(_root, name);
    }

    public async Task WriteAsync(string name, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        var path = PathOf(name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        // Write then rename, so a crash never leaves a half-written file under the final name.
        var tmp = path + ".tmp-" + Guid.NewGuid().ToString("N");
        await using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 81920, FileOptions.Asynchronous))
        {
            await fs.WriteAsync(data, ct);
            await fs.FlushAsync(ct);
            fs.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
    }

    public Stream? OpenRead(string name)
    {
        var path = PathOf(name);
        try { return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 81920, FileOptions.Asynchronous); }
        catch (FileNotFoundException) { return null; }
        catch (DirectoryNotFoundException) { return null; }
    }

    public Task<byte[]> ReadAllAsync(string name, CancellationToken ct) => File.ReadAllBytesAsync(PathOf(name), ct);

    public void Delete(string name)
    {
        var path = PathOf(name);
        if (File.Exists(path)) File.Delete(path);
    }
}
