using OmniConsistency.Api;

var app = ServiceApp.Build(ServiceApp.CreateBuilder(args));
app.Run();

public partial class Program;
