using System.CommandLine;
using FiberCuda.IO;

namespace FiberCuda.Cli.Commands;

/// <summary>`fiber convert`: official FIBER / roberta-base / Swin checkpoints → weights/NAME/{model.safetensors, config.json}.</summary>
public static class ConvertCommand
{
    public static Command Create()
    {
        var inputs = new Argument<string[]>("inputs") { Description = "checkpoint files or HF model directories", Arity = ArgumentArity.OneOrMore };
        var from = new Option<string>("--from") { Description = "official-coarse | official-fine | hf-roberta | swin | auto (or one per input, comma-separated)", DefaultValueFactory = _ => "auto" };
        var output = new Option<string>("--out", "-o") { Description = "output folder, e.g. weights/fiber-b-coarse-384", Required = true };
        var imageSize = new Option<int?>("--image-size") { Description = "coarse only: target image side; relative-position tables are resized (bicubic) when it differs" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "folder with the RoBERTa vocab.json and merges.txt to copy next to the weights" };
        var config = new Option<string?>("--config") { Description = "a preset name or config.json to use instead of inferring the model from the checkpoint" };
        var fuse = new Option<int>("--fuse") { Description = "composed init: fused Swin blocks / text layers", DefaultValueFactory = _ => 6 };
        var heads = new Option<string>("--heads") { Description = "composed init: heads to create (comma list of itc,mlm,itm,vqa,nlvr2,caption)", DefaultValueFactory = _ => "itc,mlm,itm" };
        var seed = new Option<int>("--seed") { Description = "composed init: seed of the fresh fusion/head weights", DefaultValueFactory = _ => 0 };
        var allowMissing = new Option<bool>("--allow-missing") { Description = "write even if parameters of the config are not in the input" };
        var allowUnexpected = new Option<bool>("--allow-unexpected") { Description = "drop input tensors the config has no place for instead of failing" };

        var cmd = new Command("convert", "convert PyTorch FIBER / RoBERTa / Swin checkpoints to the engine's safetensors format");
        cmd.Arguments.Add(inputs);
        foreach (var o in new Option[] { from, output, imageSize, tokenizer, config, fuse, heads, seed, allowMissing, allowUnexpected }) cmd.Options.Add(o);
        cmd.SetAction(pr => ExitCodes.Run(() =>
        {
            var opts = new ConvertOptions
            {
                Inputs = pr.GetValue(inputs)!, From = pr.GetValue(from)!, ImageSize = pr.GetValue(imageSize), Config = pr.GetValue(config),
                Fuse = pr.GetValue(fuse), Heads = pr.GetValue(heads)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                Seed = pr.GetValue(seed), AllowMissing = pr.GetValue(allowMissing), AllowUnexpected = pr.GetValue(allowUnexpected),
            };
            string? tok = pr.GetValue(tokenizer);
            if (tok is not null && !Directory.Exists(tok)) throw new DirectoryNotFoundException($"{tok}: --tokenizer folder does not exist");
            var r = FiberConverter.Convert(opts);
            string outDir = pr.GetValue(output)!;
            FiberConverter.Write(r, outDir, tok);
            Summary(r, outDir);
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    static void Summary(ConvertResult r, string outDir)
    {
        foreach (var s in r.Sources) Console.WriteLine($"input      {s}");
        Console.WriteLine($"config     {r.Config.Name} ({r.Config.Stage.ToString().ToLowerInvariant()}, image {r.Config.ImageSize}, window {r.Config.WindowSize})");
        Console.WriteLine($"tensors    {r.Tensors.Count}");
        Console.WriteLine($"parameters {r.Parameters:N0}");
        Console.WriteLine($"dropped    {r.Dropped.Count}{Few(r.Dropped)}");
        Console.WriteLine($"resized    {r.Resized.Count}{Few(r.Resized)}");
        Console.WriteLine($"initialised {r.Initialised.Count}{Few(r.Initialised)}");
        Console.WriteLine($"missing    {r.Missing.Count}{Few(r.Missing)}");
        Console.WriteLine($"unexpected {r.Unexpected.Count}{Few(r.Unexpected)}");
        Console.WriteLine($"wrote      {Path.Combine(outDir, "model.safetensors")}, config.json");
    }

    static string Few(List<string> l) => l.Count == 0 ? "" : "  (" + string.Join(", ", l.Take(4)) + (l.Count > 4 ? ", …" : "") + ")";
}
