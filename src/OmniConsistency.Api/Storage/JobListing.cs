namespace OmniConsistency.Api.Storage;

/// <summary>
/// A place in an owner's job list, which runs newest first by (created_at, id): the key of the last job a page showed.
/// The next page starts strictly after it, so jobs created meanwhile (newer, hence before it) never shift a page.
/// </summary>
public sealed record JobListCursor(DateTimeOffset CreatedAt, string Id);

/// <summary>One page of an owner's jobs: only <see cref="Statuses"/> when it is not empty, after <see cref="After"/>, at most <see cref="Limit"/>.</summary>
public sealed record JobListQuery(string Owner, IReadOnlyCollection<JobStatus> Statuses, JobListCursor? After, int Limit);

public enum DeleteOutcome { NotFound, NotFinished, Deleted }

/// <summary>
/// What <see cref="IJobStore.DeleteAsync"/> did. <see cref="Job"/> is the job as it was (also when it was not finished);
/// <see cref="Blobs"/> are the files the caller deletes after the commit (empty unless deleted).
/// </summary>
public sealed record DeleteResult(DeleteOutcome Outcome, JobRecord? Job, IReadOnlyList<string> Blobs);
