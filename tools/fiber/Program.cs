using System.CommandLine;
using FiberCuda.Cli.Commands;

// A small router: each command lives in Commands/<Name>Command.cs and exposes Create().
var root = new RootCommand("fiber: FIBER in C# with hand-written CUDA kernels");
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(TrainCommand.Create());
root.Subcommands.Add(EvalCommand.Create());
root.Subcommands.Add(ConvertCommand.Create());
root.Subcommands.Add(InspectCommand.Create());
root.Subcommands.Add(ForwardCommand.Create());
return root.Parse(args).Invoke();
