using Microsoft.Extensions.Options;
using OmniConsistency.Api.Options;

namespace OmniConsistency.Api.Storage;

/// <summary>
/// Where input photos and result images live, by name ("inputs/&lt;id&gt;", "results/&lt;id&gt;.png"). Every API and
/// worker process must see the same store: a folder (a shared volume across machines) or an S3-compatible bucket.
/// </summary>
public interface IBlobStore
{
    Task WriteAsync(string name, ReadOnlyMemory<byte> data, CancellationToken ct);
    /// <summary>Null when the blob does not exist.</summary>
    Task<Stream?> OpenReadAsync(string name, CancellationToken ct);
    /// <summary>Throws <see cref="FileNotFoundException"/> when the blob does not exist.</summary>
    Task<byte[]> ReadAllAsync(string name, CancellationToken ct);
    /// <summary>Deleting a blob that does not exist is not an error.</summary>
    Task DeleteAsync(string name, CancellationToken ct);
}

/// <summary>A store that can hand clients a time-limited URL to read a blob directly (GET .../result redirects to it).</summary>
public interface IBlobUrlSigner
{
    /// <summary>Null when this store is configured not to redirect.</summary>
    Task<Uri?> GetReadUrlAsync(string name, string contentType, CancellationToken ct);
}

/// <summary>Blob names are made by the service; anything that could leave the store's root is refused.</summary>
public static class BlobNames
{
    public static string Check(string name)
    {
        if (name.Length == 0 || name.Contains("..", StringComparison.Ordinal) || Path.IsPathRooted(name) || name.Contains('\\'))
            throw new ArgumentException($"Invalid blob name '{name}'.", nameof(name));
        return name;
    }
}

public sealed class FileBlobStore : IBlobStore
{
    private readonly string _root;

    public FileBlobStore(IOptions<StorageOptions> storage, IOptions<BlobOptions> blobs)
    {
        _root = string.IsNullOrWhiteSpace(blobs.Value.Directory) ? Path.Combine(storage.Value.DataPath, "blobs") : Path.GetFullPath(blobs.Value.Directory);
        Directory.CreateDirectory(_root);
    }

    private string PathOf(string name) => Path.Combine(_root, BlobNames.Check(name));

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

    public Task<Stream?> OpenReadAsync(string name, CancellationToken ct)
    {
        var path = PathOf(name);
        try { return Task.FromResult<Stream?>(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 81920, FileOptions.Asynchronous)); }
        catch (FileNotFoundException) { return Task.FromResult<Stream?>(null); }
        catch (DirectoryNotFoundException) { return Task.FromResult<Stream?>(null); }
    }

    public Task<byte[]> ReadAllAsync(string name, CancellationToken ct) => File.ReadAllBytesAsync(PathOf(name), ct);

    public Task DeleteAsync(string name, CancellationToken ct)
    {
        var path = PathOf(name);
        if (File.Exists(path)) File.Delete(path);
        return Task.CompletedTask;
    }
}
