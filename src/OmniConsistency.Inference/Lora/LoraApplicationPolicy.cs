namespace OmniConsistency.Inference.Lora;

/// <summary>
/// Chooses run-time adapters or merge-and-restore for one generation. Merging removes the per-step LoRA cost (two
/// skinny GEMMs and an add per adapted Linear: +2.5-12% of a step in fp32, +29% in bf16 on CPU, benchmark
/// <c>lora-switch</c>, figures in Lora/README.md) for a one-off merge + exact restore of 6-34% of one step, but needs a
/// copy of every adapted weight. So: merge when the generation makes enough transformer calls to amortise it and the
/// copy fits the configured budget; otherwise run-time.
/// </summary>
public sealed record LoraApplicationPolicy
{
    /// <summary>Force one mode; null = decide per generation.</summary>
    public LoraApplication? Force { get; init; }

    /// <summary>Merge only for generations with at least this many transformer calls (OmniConsistency: steps + 1 warm-up).</summary>
    public int MinForwardPassesToMerge { get; init; } = 4;

    /// <summary>Most bytes the restore copies may take (on the model's device). 0 never merges.</summary>
    public long MergeBackupBudgetBytes { get; init; } = 8L << 30;

    public LoraApplication Choose(LoraAdapterSet set, LoraTargetModules transformer, int forwardPasses, LoraTargetModules? textEncoder = null)
    {
        if (Force is { } forced) return forced;
        if (set.IsEmpty || forwardPasses < MinForwardPassesToMerge) return LoraApplication.RunTime;
        // lora_B biases need a base bias to merge into; run-time handles every case.
        if (set.Entries.Any(e => e.Adapter.Modules.Any(m => m.BBias is not null))) return LoraApplication.RunTime;
        return set.MergeBackupBytes(transformer, textEncoder) <= MergeBackupBudgetBytes ? LoraApplication.Merged : LoraApplication.RunTime;
    }
}
