using OmniConsistency.Api;
using OmniConsistency.Api.Engine;
using OmniConsistency.Api.Tests;
using OmniConsistency.Inference.Pipelines;

// The real service (ServiceApp) with TestEngine in place of the model; TestEngine:StepDelayMs sets its speed,
// TestEngine:RunLogDirectory where it logs each run (multi-process tests). TestEngine:Engine=builtin serves the real
// engine from Omni:Engine (the built-in tiny model when no model is configured) with the same run log, StepDelayMs
// then being a pause after each step.
var builder = ServiceApp.CreateBuilder(args);
var stepDelay = TimeSpan.FromMilliseconds(int.TryParse(builder.Configuration["TestEngine:StepDelayMs"], out var ms) ? ms : 5);
var runLog = builder.Configuration["TestEngine:RunLogDirectory"];
if (builder.Configuration["TestEngine:Engine"] == "builtin")
    builder.Services.AddSingleton<IStylizationEngine>(sp => new RunLoggingEngine(
        StylizationEngine.Create(EngineRegistration.CreateOptions(builder.Configuration), sp.GetRequiredService<ILoggerFactory>()), stepDelay, runLog));
else
    builder.Services.AddSingleton<IStylizationEngine>(new TestEngine { StepDelay = stepDelay, RunLogDirectory = runLog });
ServiceApp.Build(builder).Run();
