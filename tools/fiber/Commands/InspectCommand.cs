using System.CommandLine;
using FiberCuda.IO;

namespace FiberCuda.Cli.Commands;

/// <summary>`fiber inspect FILE`: tensors (name, dtype, shape, bytes) and non-tensor metadata of any supported file.</summary>
public static class InspectCommand
{
    public static Command Create()
    {
        var file = new Argument<string>("file") { Description = "safetensors, .pt/.pth/.ckpt/.bin, *.index.json or an HF model folder" };
        var all = new Option<bool>("--all") { Description = "checkpoints: also list tensors outside the state dict (optimizer state, ...)" };
        var filter = new Option<string?>("--filter") { Description = "only tensors whose name contains this text" };
        var cmd = new Command("inspect", "list the tensors and metadata of a weight file");
        cmd.Arguments.Add(file); cmd.Options.Add(all); cmd.Options.Add(filter);
        cmd.SetAction(pr => ExitCodes.Run(() =>
        {
            string path = pr.GetValue(file)!;
            string? f = pr.GetValue(filter);
            using var src = WeightFiles.Open(path);
            IEnumerable<TensorInfo> list = src.Tensors;
            string kind = src switch
            {
                SafeTensorsFile => "safetensors",
                TorchCheckpoint t => t.Format + (t.StateDictKey.Length > 0 ? $", state dict under '{t.StateDictKey}'" : "") + (t.StrippedModulePrefix ? ", 'module.' prefix removed" : ""),
                ShardedWeights => "HF shard index",
                _ => src.GetType().Name,
            };
            if (pr.GetValue(all) && src is TorchCheckpoint tc)
                list = tc.AllTensors().Select(x => new TensorInfo(x.Name, x.Ref.DType, x.Ref.Shape));
            if (f is not null) list = list.Where(t => t.Name.Contains(f, StringComparison.Ordinal));
            var rows = list.ToList();
            Console.WriteLine($"{path}: {kind}");
            int w = Math.Max(4, rows.Count == 0 ? 4 : rows.Max(r => r.Name.Length));
            Console.WriteLine($"{"name".PadRight(w)}  {"dtype",-6} {"shape",-24} {"bytes",14}");
            foreach (var t in rows) Console.WriteLine($"{t.Name.PadRight(w)}  {t.DType.Lower(),-6} {HostTensor.Fmt(t.Shape),-24} {t.Bytes,14:N0}");
            Console.WriteLine($"{rows.Count} tensors, {rows.Sum(r => r.Numel):N0} elements, {rows.Sum(r => r.Bytes):N0} bytes");
            if (src is SafeTensorsFile st && st.Metadata.Count > 0)
            {
                Console.WriteLine("metadata:");
                foreach (var (k, v) in st.Metadata) Console.WriteLine($"  {k}: {v}");
            }
            if (src is TorchCheckpoint ck)
            {
                var meta = ck.Metadata().ToList();
                if (meta.Count > 0)
                {
                    Console.WriteLine("metadata:");
                    foreach (var (p, v) in meta) Console.WriteLine($"  {p}: {v}");
                }
            }
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
