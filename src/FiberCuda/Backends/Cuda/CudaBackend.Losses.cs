using System.Runtime.InteropServices;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cuda;

public sealed unsafe partial class CudaBackend
{
    // =============================================================================================
    // losses
    // =============================================================================================

    public void CrossEntropy(Tensor logits, Tensor targets, int ignoreIndex, Tensor loss, Tensor lse)
    {
        const string op = nameof(CrossEntropy);
        var (N, C) = CeShapes(op, logits, targets);
        Small(loss, N, op, "loss"); Stats(lse, N, op, "lse");
        if (N == 0) return;
        nint pl = logits.Address, pt = targets.Address, ploss = loss.Address, plse = lse.Address;
        long ignore = ignoreIndex; int ldt = Dt(loss);
        void** a = stackalloc void*[] { &pl, &pt, &ignore, &ploss, &ldt, &plse, &C };
        Launch("crossentropy.cu", $"ce_fwd_{S(logits)}_{targets.DType.Name()}", (int)N, RowThreads(C), 0, a);
    }

    public void CrossEntropyBackward(Tensor logits, Tensor targets, int ignoreIndex, Tensor lse, Tensor dloss, Tensor dlogits)
    {
        const string op = nameof(CrossEntropyBackward);
        var (N, C) = CeShapes(op, logits, targets);
        SameAll(op, logits, dlogits);
        Small(dloss, N, op, "dloss"); Stats(lse, N, op, "lse");
        if (N == 0) return;
        nint pl = logits.Address, pt = targets.Address, plse = lse.Address, pd = dloss.Address, pdl = dlogits.Address;
        long ignore = ignoreIndex; int ddt = Dt(dloss);
        void** a = stackalloc void*[] { &pl, &pt, &ignore, &plse, &pd, &ddt, &pdl, &C };
        Launch("crossentropy.cu", $"ce_bwd_{S(logits)}_{targets.DType.Name()}", (int)N, RowThreads(C), 0, a);
    }

    (long N, int C) CeShapes(string op, Tensor logits, Tensor targets)
    {
        Float(logits, "logits"); Index(targets, op, "targets");
        if (logits.Rank != 2) throw new ArgumentException($"{op}: logits must be [N,C], got {Describe(logits)}");
        if (targets.Numel != logits.Shape[0]) throw new ArgumentException($"{op}: {Describe(targets)} does not match {Describe(logits)}");
        return (logits.Shape[0], logits.Shape[1]);
    }

    // =============================================================================================
    // embedding
    // =============================================================================================

    public void Embedding(Tensor weight, Tensor ids, Tensor y)
    {
        const string op = nameof(Embedding);
        Float(weight, "weight"); Index(ids, op, "ids"); Mine(y, "y");
        var (V, D) = EmbShapes(op, weight, ids, y);
        if (y.DType != weight.DType) throw new ArgumentException($"{op}: y is {y.DType.Name()} but weight is {weight.DType.Name()}");
        long N = ids.Numel;
        if (N == 0 || D == 0) return;
        nint pw = weight.Address, pi = ids.Address, py = y.Address;
        void** a = stackalloc void*[] { &pw, &pi, &py, &V, &N, &D };
        Launch("embedding.cu", $"embedding_fwd_{S(weight)}_{ids.DType.Name()}", Grid(N * D, Pack(weight)), Threads, 0, a);
    }

    public void EmbeddingBackward(Tensor dy, Tensor ids, Tensor dweight)
    {
        const string op = nameof(EmbeddingBackward);
        Float(dy, "dy"); Float(dweight, "dweight"); Index(ids, op, "ids");
        var (V, D) = EmbShapes(op, dweight, ids, dy);
        long N = ids.Numel;
        if (N == 0 || D == 0) return;
        nint pdy = dy.Address, pi = ids.Address, pw = dweight.Address;
        void** a = stackalloc void*[] { &pdy, &pi, &pw, &V, &N, &D };
        Launch("embedding.cu", $"embedding_bwd_{S(dy)}_{S(dweight)}_{ids.DType.Name()}", Grid(N * D), Threads, 0, a);
    }

    static (long V, int D) EmbShapes(string op, Tensor weight, Tensor ids, Tensor rows)
    {
        if (weight.Rank != 2) throw new ArgumentException($"{op}: weight must be [V,D], got {Describe(weight)}");
        int D = weight.Shape[1];
        if (rows.Numel != ids.Numel * D || rows.Dim(-1) != D)
            throw new ArgumentException($"{op}: {Describe(rows)} does not match ids {Describe(ids)} and weight {Describe(weight)}");
        return (weight.Shape[0], D);
    }

    // =============================================================================================
    // dropout
    // =============================================================================================

    public void Dropout(Tensor x, float p, ulong seed, ulong offset, Tensor y)
    {
        Float(x, "x"); SameAll(nameof(Dropout), x, y); DropP(p);
        if (x.Numel == 0) return;
        nint px = x.Address, py = y.Address; long n = x.Numel;
        void** a = stackalloc void*[] { &px, &py, &n, &p, &seed, &offset };
        Launch("dropout.cu", "dropout_fwd_" + S(x), Grid(n), Threads, 0, a);
    }

    public void DropoutBackward(Tensor dy, float p, ulong seed, ulong offset, Tensor dx)
    {
        Float(dy, "dy"); SameAll(nameof(DropoutBackward), dy, dx); DropP(p);
        if (dy.Numel == 0) return;
        nint pdy = dy.Address, pdx = dx.Address; long n = dy.Numel;
        void** a = stackalloc void*[] { &pdy, &pdx, &n, &p, &seed, &offset };
        Launch("dropout.cu", "dropout_bwd_" + S(dy), Grid(n), Threads, 0, a);
    }

    static void DropP(float p)
    {
        if (!(p >= 0 && p <= 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "dropout probability must be in [0, 1]");
    }
}
