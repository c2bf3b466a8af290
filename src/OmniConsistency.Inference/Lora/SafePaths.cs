namespace OmniConsistency.Inference.Lora;

/// <summary>Path checks for user-supplied names: real paths (symbolic links resolved) and containment.</summary>
internal static class SafePaths
{
    private const int MaxLinkHops = 40;

    /// <summary>The path with every symbolic link resolved (like POSIX realpath, but the file need not exist).</summary>
    public static string RealPath(string path) => RealPath(path, 0);

    private static string RealPath(string path, int hops)
    {
        if (hops > MaxLinkHops) throw new IOException($"Too many levels of symbolic links resolving '{path}'.");
        var full = Path.GetFullPath(path);
        var root = Path.GetPathRoot(full) ?? "/";
        var parts = full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
        var current = root;
        for (int i = 0; i < parts.Length; i++)
        {
            var next = Path.Combine(current, parts[i]);
            FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            var target = info.LinkTarget;
            if (target is not null)
            {
                // Relative link targets are relative to the link's folder, which is already real here.
                var resolved = Path.IsPathRooted(target) ? target : Path.Combine(current, target);
                var rest = string.Join(Path.DirectorySeparatorChar, parts[(i + 1)..]);
                return RealPath(rest.Length == 0 ? resolved : Path.Combine(resolved, rest), hops + 1);
            }
            current = next;
        }
        return current;
    }

    /// <summary>Whether <paramref name="realPath"/> lies strictly inside <paramref name="realFolder"/> (both real paths).</summary>
    public static bool IsInside(string realPath, string realFolder)
    {
        var folder = realFolder.EndsWith(Path.DirectorySeparatorChar) ? realFolder : realFolder + Path.DirectorySeparatorChar;
        return realPath.StartsWith(folder, StringComparison.Ordinal) && realPath.Length > folder.Length;
    }
}
