namespace OmniConsistency.Inference.Tests.Golden;

/// <summary>
/// Where the golden cases live: $OMNI_GOLDEN_DIR; else the copy kept in the repository (tests/golden), so a fresh
/// clone runs them; else the shared set beside the repository root (../shared/golden), where the reference set is kept.
/// </summary>
public static class GoldenRoot
{
    public static string Path { get; } = Resolve();

    private static string Resolve()
    {
        var env = Environment.GetEnvironmentVariable("OMNI_GOLDEN_DIR");
        if (!string.IsNullOrWhiteSpace(env)) return System.IO.Path.GetFullPath(env);
        var inRepository = System.IO.Path.Combine(RepositoryRoot.Path, "tests", "golden");
        var beside = System.IO.Path.GetFullPath(System.IO.Path.Combine(RepositoryRoot.Path, "..", "shared", "golden"));
        return Directory.Exists(inRepository) || !Directory.Exists(beside) ? inRepository : beside;
    }
}

public static class RepositoryRoot
{
    public static string Path { get; } = Find();

    private static string Find()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(System.IO.Path.Combine(dir.FullName, "OmniConsistency.sln")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("Cannot find the repository root (OmniConsistency.sln) above " + AppContext.BaseDirectory);
    }
}
