using System.Buffers.Text;
using System.Globalization;
using System.Text;
using OmniConsistency.Api.Storage;

namespace OmniConsistency.Api.Jobs;

/// <summary>GET /v1/stylizations: a page of the caller's jobs, newest first; <see cref="Next"/> is absent on the last page.</summary>
public sealed record JobPage
{
    /// <summary>The jobs as GET /v1/stylizations/{id} shows them, without webhook delivery states (read the job for those).</summary>
    public required IReadOnlyList<JobResource> Items { get; init; }
    /// <summary>The opaque cursor of the next page (pass it as <c>cursor</c>).</summary>
    public string? NextCursor { get; init; }
    /// <summary>The next page's URL: same filter and limit, <see cref="NextCursor"/> as <c>cursor</c>.</summary>
    public string? Next { get; init; }
}

/// <summary>
/// Cursors are opaque to clients: base64url of "1.&lt;created_at ticks&gt;.&lt;id&gt;" (the version lets the format change).
/// A forged cursor can only move the caller through its own jobs: the list is always scoped to the owner.
/// </summary>
public static class JobListCursors
{
    private const string Version = "1";

    public static string Encode(JobListCursor cursor) =>
        Base64Url.EncodeToString(Encoding.ASCII.GetBytes(
            $"{Version}.{cursor.CreatedAt.UtcTicks.ToString(CultureInfo.InvariantCulture)}.{cursor.Id}"));

    public static bool TryDecode(string text, out JobListCursor? cursor)
    {
        cursor = null;
        if (text.Length is 0 or > 200 || !Base64Url.IsValid(text)) return false;
        var parts = Encoding.ASCII.GetString(Base64Url.DecodeFromChars(text)).Split('.');
        if (parts.Length != 3 || parts[0] != Version) return false;
        if (!long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var ticks) ||
            ticks < DateTimeOffset.MinValue.UtcTicks || ticks > DateTimeOffset.MaxValue.UtcTicks) return false;
        if (!JobService.IsWellFormedId(parts[2])) return false;
        cursor = new JobListCursor(new DateTimeOffset(ticks, TimeSpan.Zero), parts[2]);
        return true;
    }
}
