using OmniConsistency.Api;
using OmniConsistency.Api.Tests;
using OmniConsistency.Inference.Pipelines;

// The real service (ServiceApp) with TestEngine in place of the model; TestEngine:StepDelayMs sets its speed,
// TestEngine:RunLogDirectory where it logs each run (multi-process tests).
var builder = ServiceApp.CreateBuilder(args);
var stepDelay = int.TryParse(builder.Configuration["TestEngine:StepDelayMs"], out var ms) ? ms : 5;
builder.Services.AddSingleton<IStylizationEngine>(new TestEngine
{
    StepDelay = TimeSpan.FromMilliseconds(stepDelay),
    RunLogDirectory = builder.Configuration["TestEngine:RunLogDirectory"],
});
ServiceApp.Build(builder).Run();
