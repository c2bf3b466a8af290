using System.Text.Json;
using OmniConsistency.Inference.Sampling;
using OmniConsistency.Inference.Tests.Golden;
using static TorchSharp.torch;

namespace OmniConsistency.Inference.Tests.Flux;

/// <summary>Golden kind "scheduler": sigmas/timesteps/mu of each schedule and Euler steps of one schedule.</summary>
[GoldenKind("scheduler")]
public sealed class SchedulerKind : IGoldenKindRunner
{
    public IReadOnlyDictionary<string, Tensor> Run(GoldenCase c)
    {
        var scheduler = new FlowMatchEulerScheduler(FlowMatchSchedulerConfig.FromJson(c.Params.GetProperty("scheduler_config")));
        var produced = new Dictionary<string, Tensor>();
        var schedules = new List<FlowMatchSchedule>();
        int j = 0;
        foreach (var s in c.Params.GetProperty("schedules").EnumerateArray())
        {
            var schedule = scheduler.CreateSchedule(s.GetProperty("num_inference_steps").GetInt32(), s.GetProperty("image_seq_len").GetInt64());
            schedules.Add(schedule);
            produced[$"sigmas_{j}"] = tensor(schedule.Sigmas);
            produced[$"timesteps_{j}"] = tensor(schedule.Timesteps);
            produced[$"mu_{j}"] = tensor(new[] { (float)schedule.Mu });
            j++;
        }
        if (c.Params.TryGetProperty("euler", out var euler) && euler.ValueKind == JsonValueKind.Object)
        {
            var schedule = schedules[euler.GetProperty("schedule_index").GetInt32()];
            var sample = c.Input("sample");
            var modelOutput = c.Input("model_output");
            foreach (var k in euler.GetProperty("step_indices").EnumerateArray().Select(e => e.GetInt32()))
                produced[$"prev_sample_{k}"] = scheduler.Step(schedule, k, modelOutput, sample);
        }
        return produced;
    }
}
