using OmniConsistency.Inference.Nn;
using TorchSharp;
using Parameter = TorchSharp.Modules.Parameter;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Lora;

/// <summary>
/// Adapters merged into the weights for one generation (W += Σ factorᵢ·BᵢAᵢ, b += Σ factorᵢ·biasᵢ), with a copy of
/// every affected weight kept so that disposing restores the base weights bit for bit (subtracting the update again
/// would not be exact in floating point). Costs the copy's memory (on the backup device) and two weight copies.
/// </summary>
public sealed class LoraMergeScope : IDisposable
{
    private readonly List<(Parameter Target, Tensor Backup)> _backups = [];
    private bool _disposed;

    internal LoraMergeScope(List<(string Name, Linear Linear, List<LoraAdapterSet.Term> Terms)> modules, Device? backupDevice)
    {
        foreach (var (name, linear, terms) in modules)
        {
            if (linear.Adapter is not null)
                throw new InvalidOperationException($"{name} has a run-time adapter attached: detach it before merging.");
            if (terms.Any(t => t.Bias is not null) && linear.bias is null)
                throw new InvalidOperationException($"{name} has no bias, so a LoRA with a lora_B bias cannot be merged into it (use run-time application).");
        }
        try
        {
            using var grad = no_grad();
            foreach (var (_, linear, terms) in modules)
            {
                Backup(linear.weight, backupDevice);
                if (terms.Any(t => t.Bias is not null)) Backup(linear.bias!, backupDevice);
                using var scope = NewDisposeScope();
                if (terms.Count == 1)
                {
                    // One fused GEMM with a single rounding into the weight's dtype.
                    linear.weight.addmm_(terms[0].B, terms[0].A, beta: 1, alpha: (float)terms[0].Factor);
                }
                else
                {
                    // Several adapters: sum the update in fp32 so the weight is rounded once.
                    var delta = zeros(linear.weight.shape, ScalarType.Float32, linear.weight.device);
                    foreach (var t in terms) delta.addmm_(t.B.to(ScalarType.Float32), t.A.to(ScalarType.Float32), beta: 1, alpha: (float)t.Factor);
                    linear.weight.add_(delta);
                }
                foreach (var t in terms)
                    if (t.Bias is not null) linear.bias!.add_(t.Bias, alpha: t.Factor);
            }
            ModuleCount = modules.Count;
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public int ModuleCount { get; }

    /// <summary>Memory held by the weight copies.</summary>
    public long BackupBytes => _backups.Sum(b => b.Backup.NumberOfElements * b.Backup.ElementSize);

    private void Backup(Parameter p, Device? device)
    {
        using var scope = NewDisposeScope();
        var copy = p.detach().to(device ?? p.device, copy: true).DetachFromDisposeScope();
        _backups.Add((p, copy));
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        using (no_grad())
            foreach (var (target, backup) in _backups)
            {
                target.copy_(backup);
                backup.Dispose();
            }
        _backups.Clear();
    }
}
