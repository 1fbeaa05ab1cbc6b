using System.CommandLine;
using System.Text.Json;
using FiberCuda.Data;
using FiberCuda.Eval;
using FiberCuda.IO;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Tensors;
using FiberCuda.Training;

namespace FiberCuda.Cli.Commands;

/// <summary>`fiber eval retrieval`: ITC recall@1/5/10 both ways on a caption dataset, optionally with ITM re-ranking.</summary>
public static class EvalCommand
{
    public static Command Create()
    {
        var eval = new Command("eval", "evaluate FIBER");
        eval.Subcommands.Add(Retrieval());
        return eval;
    }

    static Command Retrieval()
    {
        var run = new Option<string?>("--run") { Description = "a training run folder (newest readable checkpoint) or one of its checkpoint files" };
        var weights = new Option<string?>("--weights", "-w") { Description = "engine weights (model.safetensors from `fiber convert`) instead of --run" };
        var config = new Option<string?>("--config") { Description = "with --weights: preset or config.json (default: the weights' metadata)" };
        var data = new Option<string>("--data") { Description = "dataset specification (as `fiber train coarse --data`)", Required = true };
        var split = new Option<string?>("--split") { Description = "Karpathy/COCO split to evaluate, e.g. test" };
        var imageRoot = new Option<string?>("--image-root") { Description = "folder the manifest's image paths are relative to" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "folder with RoBERTa's vocab.json and merges.txt (default: GPT-2 fallback)" };
        var maxImages = new Option<int?>("--max-images") { Description = "evaluate the first N images (and their captions)" };
        var itmK = new Option<int?>("--itm-k") { Description = "re-rank each query's ITC top k with the fused model's ITM score" };
        var itmScore = new Option<string>("--itm-score") { Description = "itm (itm_score class-1 logit) | rank (rank_output, the official head)", DefaultValueFactory = _ => "itm" };
        itmScore.AcceptOnlyFromAmong("itm", "rank");
        var batch = new Option<int>("--batch-size") { Description = "images/texts/pairs per forward", DefaultValueFactory = _ => 64 };
        var device = new Option<string>("--device") { Description = Devices.Help, DefaultValueFactory = _ => "auto" };
        device.AcceptOnlyFromAmong(Devices.Names);
        var output = new Option<string?>("--out", "-o") { Description = "write the numbers as JSON here" };

        var cmd = new Command("retrieval", "image→text and text→image recall@1/5/10 (ITC, optionally ITM re-ranking)");
        foreach (var o in new Option[] { run, weights, config, data, split, imageRoot, tokenizer, maxImages, itmK, itmScore, batch, device, output })
            cmd.Options.Add(o);
        cmd.SetAction(pr => ExitCodes.Run(() =>
        {
            var be = Devices.OpenBackend(pr.GetValue(device)!, DType.F32).Backend;
            FiberCoarseModel model; CoarseHeads heads; string source;
            if (pr.GetValue(run) is { } r)
            {
                long step;
                (model, heads, step) = CoarseTrainer.LoadForEval(r, be);
                source = $"{r} (step {step})";
            }
            else if (pr.GetValue(weights) is { } w)
            {
                (model, heads) = LoadWeights(w, pr.GetValue(config), be);
                source = w;
            }
            else throw new ArgumentException("pass --run RUN or --weights model.safetensors");
            var stats = new DataStats();
            var splits = pr.GetValue(split) is { } sp ? new[] { sp } : null;
            var set = RetrievalSet.Create(CaptionDatasets.Open(pr.GetValue(data)!, stats, pr.GetValue(imageRoot), splits),
                new RetrievalSetOptions { MaxImages = pr.GetValue(maxImages) }, stats);
            var result = RetrievalEvaluator.Run(model, heads, set, CaptionTokenizer.FromDirectoryOrGpt2(pr.GetValue(tokenizer)), new RetrievalEvalOptions
            {
                BatchSize = pr.GetValue(batch), ItmTopK = pr.GetValue(itmK),
                ItmScore = pr.GetValue(itmScore) == "rank" ? ItmScoreHead.RankOutput : ItmScoreHead.ItmLogit,
            });
            Print(source, result);
            if (pr.GetValue(output) is { } outPath)
                AtomicFile.WriteAllText(outPath, JsonSerializer.Serialize(new { source, result = result.ToDictionary(), images = result.Images, texts = result.Texts,
                    skipped_images = result.SkippedImages, itm_k = result.ItmTopK, pairs_scored = result.PairsScored, seconds = result.Seconds },
                    new JsonSerializerOptions { WriteIndented = true }));
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    public static void Print(string source, RetrievalEvalResult r)
    {
        Console.WriteLine($"{source}: {r.Images} images, {r.Texts} texts{(r.SkippedImages > 0 ? $", {r.SkippedImages} images skipped" : "")} ({r.Seconds:F1} s)");
        Console.WriteLine($"  ITC  {r.Itc}");
        if (r.Itm is not null) Console.WriteLine($"  ITM (top {r.ItmTopK}, {r.PairsScored} pairs)  {r.Itm}");
    }

    /// <summary>Backbone and heads from engine weights (heads not in the file keep their fresh init and are reported).</summary>
    static (FiberCoarseModel, CoarseHeads) LoadWeights(string path, string? configArg, Backends.IBackend be)
    {
        using var src = WeightFiles.Open(path);
        var config = configArg is not null ? ConfigArg.Load(configArg)
            : src is SafeTensorsFile st ? EngineWeights.ReadConfig(st)
            : throw new ArgumentException($"{path} carries no config: pass --config");
        var ctx = new NnContext(be, DType.F32);
        var model = new FiberCoarseModel(ctx, config);
        var heads = new CoarseHeads(ctx, config);
        model.LoadBackbone(src);
        var rep = heads.LoadFrom(src, strict: false, CoarseHeads.IsHeadKey);
        if (rep.Missing.Count > 0) Console.Error.WriteLine($"fiber: {path} lacks {string.Join(", ", rep.Missing)}; ITM scores from those heads are meaningless");
        return (model, heads);
    }
}
