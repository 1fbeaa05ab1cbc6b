using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using FiberCuda.Runtime;
using FiberCuda.Tensors;
using Tensor = FiberCuda.Tensors.Tensor;

namespace FiberCuda.Backends.Cpu;

/// <summary>
/// The C# reference of <see cref="IHeadOps"/>. Same algorithms as the GPU (one pass over the ITC keys
/// giving loss and gradients; MLM over V tiles with the reference GEMM and an online logsumexp), in
/// fp32 for f32/bf16 tensors and fp64 for f64 tensors. Cross-row sums run in a fixed order, so results
/// do not depend on the core count.
/// </summary>
public sealed unsafe class CpuHeadOps : IHeadOps
{
    readonly CpuBackend _be;
    int _tile = 8192;

    public CpuHeadOps(CpuBackend backend) { _be = backend; }

    public IBackend Backend => _be;

    public int MlmTileColumns
    {
        get => _tile;
        set => _tile = value >= 1 ? value : throw new ArgumentOutOfRangeException(nameof(value), "a tile needs at least one column");
    }

    static void Own(params Tensor?[] ts)
    {
        foreach (var t in ts)
            if (t is not null && t.Storage is not CpuStorage) throw new ArgumentException($"{t} does not live on the CPU backend");
    }

    static bool IsFloat(DType d) => d is DType.F32 or DType.BF16 or DType.F64;

    static void RequireFloat(Tensor t, string op, string name)
    {
        if (!IsFloat(t.DType)) throw new ArgumentException($"{op}: {name} must be a float tensor, got {t}");
    }

    // ================================================================== ITC

    public void ClampInPlace(Tensor t, double lo, double hi)
    {
        Own(t); RequireFloat(t, nameof(ClampInPlace), "t");
        if (!(lo <= hi)) throw new ArgumentException($"ClampInPlace: lo {lo} > hi {hi}");
        for (long i = 0; i < t.Numel; i++)
        {
            double v = HostIO.LoadD(t.Address, t.DType, i);
            if (v < lo) v = lo; else if (v > hi) v = hi; // NaN fails both tests and stays NaN
            HostIO.StoreD(t.Address, t.DType, i, v);
        }
    }

    internal static (int B, int D, int Q) ItcShapes(string op, Tensor imgQ, Tensor txtQ, Tensor imgK, Tensor txtK, Tensor imgQueue, Tensor txtQueue,
                                                    Tensor temp, Tensor loss, Tensor? gImg, Tensor? gTxt, Tensor? gTemp)
    {
        if (imgQ.Rank != 2) throw new ArgumentException($"{op}: image features must be [B,D], got {imgQ}");
        int b = imgQ.Shape[0], d = imgQ.Shape[1];
        foreach (var (t, name) in new[] { (txtQ, "txtQ"), (imgK, "imgK"), (txtK, "txtK") })
            if (t.Rank != 2 || t.Shape[0] != b || t.Shape[1] != d) throw new ArgumentException($"{op}: {name} {t} must be [{b},{d}] like the image features");
        if (imgQueue.Rank != 2 || imgQueue.Shape[1] != d) throw new ArgumentException($"{op}: image queue {imgQueue} must be [Q,{d}] (one entry per row)");
        if (txtQueue.Rank != 2 || !ShapeUtil.Equal(txtQueue.Shape, imgQueue.Shape)) throw new ArgumentException($"{op}: text queue {txtQueue} must match the image queue {imgQueue}");
        foreach (var t in new[] { txtQ, imgK, txtK, imgQueue, txtQueue })
            if (t.DType != imgQ.DType) throw new ArgumentException($"{op}: {t} must have the features' dtype {imgQ.DType.Name()}");
        if (!IsFloat(imgQ.DType)) throw new ArgumentException($"{op}: features must be float tensors, got {imgQ}");
        if (temp.Numel != 1 || !IsFloat(temp.DType)) throw new ArgumentException($"{op}: temp must be a one-element float tensor, got {temp}");
        if (loss.Numel != 1 || !IsFloat(loss.DType)) throw new ArgumentException($"{op}: loss must be a one-element float tensor, got {loss}");
        if (gTemp is not null && (gTemp.Numel != 1 || !IsFloat(gTemp.DType))) throw new ArgumentException($"{op}: gTemp must be a one-element float tensor, got {gTemp}");
        foreach (var g in new[] { gImg, gTxt })
            if (g is not null && (g.Numel != (long)b * d || g.DType != imgQ.DType)) throw new ArgumentException($"{op}: gradient {g} must be [{b},{d}] {imgQ.DType.Name()}");
        if (b == 0) throw new ArgumentException($"{op}: empty batch");
        return (b, d, imgQueue.Shape[0]);
    }

    public void ItcForward(Tensor imgQ, Tensor txtQ, Tensor imgK, Tensor txtK, Tensor imgQueue, Tensor txtQueue, Tensor temp,
                           Tensor loss, Tensor? gImg, Tensor? gTxt, Tensor? gTemp)
    {
        Own(imgQ, txtQ, imgK, txtK, imgQueue, txtQueue, temp, loss, gImg, gTxt, gTemp);
        ItcShapes(nameof(ItcForward), imgQ, txtQ, imgK, txtK, imgQueue, txtQueue, temp, loss, gImg, gTxt, gTemp);
        if (imgQ.DType == DType.F64) ItcT<double>(imgQ, txtQ, imgK, txtK, imgQueue, txtQueue, temp, loss, gImg, gTxt, gTemp);
        else ItcT<float>(imgQ, txtQ, imgK, txtK, imgQueue, txtQueue, temp, loss, gImg, gTxt, gTemp);
    }

    static T[] ReadAll<T>(Tensor t) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var a = new T[t.Numel];
        HostIO.Read<T>(t, 0, a);
        return a;
    }

    static void ItcT<T>(Tensor imgQ, Tensor txtQ, Tensor imgK, Tensor txtK, Tensor imgQueue, Tensor txtQueue, Tensor temp,
                        Tensor loss, Tensor? gImg, Tensor? gTxt, Tensor? gTemp) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int b = imgQ.Shape[0], d = imgQ.Shape[1], q = imgQueue.Shape[0], n = b + q;
        var queries = new[] { ReadAll<T>(imgQ), ReadAll<T>(txtQ) };
        // Direction 0 (image→text) ranks the text keys, direction 1 the image keys: [batch keys ‖ queue].
        var keys = new[] { new T[(long)n * d], new T[(long)n * d] };
        HostIO.Read<T>(txtK, 0, keys[0].AsSpan(0, b * d)); HostIO.Read<T>(txtQueue, 0, keys[0].AsSpan(b * d));
        HostIO.Read<T>(imgK, 0, keys[1].AsSpan(0, b * d)); HostIO.Read<T>(imgQueue, 0, keys[1].AsSpan(b * d));
        Span<T> one = stackalloc T[1];
        HostIO.Read<T>(temp, 0, one);
        T tau = one[0], invTau = T.One / tau, half = T.One / T.CreateTruncating(2 * b);
        var grads = new[] { gImg is null ? null : new T[(long)b * d], gTxt is null ? null : new T[(long)b * d] };
        var rowLoss = new T[2 * b];
        var rowTemp = new T[2 * b];

        Par.Rows(2 * b, (long)n * d, (r0, r1) =>
        {
            var s = new T[n];
            var acc = new T[d];
            for (long row = r0; row < r1; row++)
            {
                int dir = (int)(row / b), i = (int)(row % b);
                var qv = queries[dir].AsSpan(i * d, d);
                var kv = keys[dir];
                for (int j = 0; j < n; j++) s[j] = TensorPrimitives.Dot<T>(qv, kv.AsSpan(j * d, d)) * invTau;
                T mx = TensorPrimitives.Max<T>(s);
                T l = T.Zero, es = T.Zero;
                for (int j = 0; j < n; j++) { T e = T.Exp(s[j] - mx); l += e; es += e * s[j]; }
                T lse = mx + T.Log(l), diag = s[i];
                rowLoss[row] = lse - diag;
                // ∂(lse − s_ii)/∂τ = −(E_p[s] − s_ii)/τ
                rowTemp[row] = -(es / l - diag) * invTau;
                if (grads[dir] is { } g)
                {
                    // ∂/∂q_i = (Σ_j p_j k_j − k_i) / τ, times the 1/(2B) of the two means and the ½
                    acc.AsSpan().Clear();
                    for (int j = 0; j < n; j++) TensorPrimitives.MultiplyAdd<T>(kv.AsSpan(j * d, d), T.Exp(s[j] - mx) / l, acc, acc);
                    TensorPrimitives.Subtract<T>(acc, kv.AsSpan(i * d, d), acc);
                    TensorPrimitives.Multiply<T>(acc, invTau * half, g.AsSpan(i * d, d));
                }
            }
        });

        T lossSum = T.Zero, tempSum = T.Zero;
        for (int r = 0; r < 2 * b; r++) { lossSum += rowLoss[r]; tempSum += rowTemp[r]; }
        one[0] = lossSum * half; HostIO.Write<T>(loss, 0, one);
        if (gTemp is not null) { one[0] = tempSum * half; HostIO.Write<T>(gTemp, 0, one); }
        if (gImg is not null) HostIO.Write<T>(gImg, 0, grads[0]);
        if (gTxt is not null) HostIO.Write<T>(gTxt, 0, grads[1]);
    }

    public void ScaleAccumulate(Tensor s, Tensor x, Tensor y)
    {
        Own(s, x, y);
        if (s.Numel != 1) throw new ArgumentException($"ScaleAccumulate: s must have one element, got {s}");
        if (x.Numel != y.Numel) throw new ArgumentException($"ScaleAccumulate: {x} and {y} differ in element count");
        RequireFloat(s, nameof(ScaleAccumulate), "s"); RequireFloat(x, nameof(ScaleAccumulate), "x"); RequireFloat(y, nameof(ScaleAccumulate), "y");
        if (x.DType == DType.F64 || y.DType == DType.F64) ScaleAccT<double>(s, x, y); else ScaleAccT<float>(s, x, y);
    }

    static void ScaleAccT<T>(Tensor s, Tensor x, Tensor y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        Span<T> one = stackalloc T[1];
        HostIO.Read<T>(s, 0, one);
        var xv = ReadAll<T>(x);
        TensorPrimitives.Multiply<T>(xv, one[0], xv);
        HostIO.Accumulate<T>(y, 0, xv, new T[xv.Length]);
    }

    public int QueueEnqueue(Tensor queue, Tensor feats, int ptr)
    {
        Own(queue, feats);
        var (b, rowBytes, q) = EnqueueShapes(queue, feats, ptr);
        int first = Math.Min(b, q - ptr);
        Buffer.MemoryCopy((void*)feats.Address, (byte*)queue.Address + (long)ptr * rowBytes, (long)(q - ptr) * rowBytes, (long)first * rowBytes);
        if (b > first) Buffer.MemoryCopy((byte*)feats.Address + (long)first * rowBytes, (void*)queue.Address, (long)q * rowBytes, (long)(b - first) * rowBytes);
        return (ptr + b) % q;
    }

    internal static (int B, long RowBytes, int Q) EnqueueShapes(Tensor queue, Tensor feats, int ptr)
    {
        if (queue.Rank != 2 || feats.Rank != 2 || queue.Shape[1] != feats.Shape[1])
            throw new ArgumentException($"QueueEnqueue: queue {queue} must be [Q,D] and features {feats} [B,D]");
        if (queue.DType != feats.DType) throw new ArgumentException($"QueueEnqueue: queue {queue} and features {feats} differ in dtype");
        int q = queue.Shape[0], b = feats.Shape[0];
        if (b > q) throw new ArgumentException($"QueueEnqueue: {b} features do not fit a queue of {q}");
        if (ptr < 0 || ptr >= q) throw new ArgumentOutOfRangeException(nameof(ptr), $"queue pointer {ptr} outside [0,{q})");
        return (b, (long)queue.Shape[1] * queue.DType.Size(), q);
    }

    // ================================================================== MLM

    internal static (int N, int H, int V) MlmShapes(string op, Tensor hidden, Tensor weight, Tensor? bias, Tensor labels)
    {
        if (hidden.Rank != 2 || weight.Rank != 2 || hidden.Shape[1] != weight.Shape[1])
            throw new ArgumentException($"{op}: hidden {hidden} must be [N,H] and weight {weight} [V,H]");
        if (hidden.DType != weight.DType || !IsFloat(hidden.DType)) throw new ArgumentException($"{op}: hidden {hidden} and weight {weight} must share a float dtype");
        int n = hidden.Shape[0], h = hidden.Shape[1], v = weight.Shape[0];
        if (bias is not null && (bias.Numel != v || !IsFloat(bias.DType))) throw new ArgumentException($"{op}: bias {bias} must be a float [{v}]");
        if (labels.Numel != n || (labels.DType != DType.I32 && labels.DType != DType.I64)) throw new ArgumentException($"{op}: labels {labels} must be [{n}] i32/i64");
        return (n, h, v);
    }

    static long[] ReadLabels(Tensor labels, int v, int ignore)
    {
        var lab = new long[labels.Numel];
        for (long i = 0; i < lab.Length; i++)
        {
            long t = HostIO.LoadIndex(labels.Address, labels.DType, i);
            if (t != ignore && (t < 0 || t >= v)) throw new ArgumentOutOfRangeException(nameof(labels), $"label {t} at row {i} is outside [0,{v}) and is not the ignore index {ignore}");
            lab[i] = t;
        }
        return lab;
    }

    int Tile(int n, int v)
    {
        // Bound the scratch to 64M elements whatever the row count (keeps the tile the point of the op).
        long cap = Math.Max(1, (64L << 20) / Math.Max(1, n));
        return (int)Math.Max(1, Math.Min(Math.Min(_tile, v), cap));
    }

    /// <summary>logits[:, 0:tv] = hidden·weight[v0:v0+tv]ᵀ (+ bias) into buf (row stride tv).</summary>
    static void TileLogits<T>(Tensor hidden, Tensor weight, T[]? bias, int n, int h, int v0, int tv, T[] buf) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var ct = typeof(T) == typeof(double) ? DType.F64 : DType.F32;
        fixed (T* c = buf)
            CpuGemm.Gemm(new GemmDesc(hidden.Address, weight.Address + (nint)((long)v0 * h * weight.DType.Size()), (nint)c, 0,
                hidden.DType, ct, ct, n, tv, h, false, true, 1f, 0f, 1, 0, 0, 0));
        if (bias is not null)
        {
            Par.Rows(n, tv, (r0, r1) =>
            {
                var bv = bias.AsSpan(v0, tv);
                for (long i = r0; i < r1; i++) TensorPrimitives.Add<T>(buf.AsSpan((int)(i * tv), tv), bv, buf.AsSpan((int)(i * tv), tv));
            });
        }
    }

    static T[]? ReadBias<T>(Tensor? bias) where T : unmanaged, IFloatingPointIeee754<T> => bias is null ? null : ReadAll<T>(bias);

    public void MlmForward(Tensor hidden, Tensor weight, Tensor? bias, Tensor labels, int ignoreIndex, Tensor loss, Tensor lse)
    {
        Own(hidden, weight, bias, labels, loss, lse);
        var (n, _, v) = MlmShapes(nameof(MlmForward), hidden, weight, bias, labels);
        if (loss.Numel != n || lse.Numel != n || !IsFloat(loss.DType) || !IsFloat(lse.DType)) throw new ArgumentException($"MlmForward: loss {loss} and lse {lse} must be float [{n}]");
        var lab = ReadLabels(labels, v, ignoreIndex);
        if (hidden.DType == DType.F64) MlmFwdT<double>(hidden, weight, bias, lab, ignoreIndex, loss, lse);
        else MlmFwdT<float>(hidden, weight, bias, lab, ignoreIndex, loss, lse);
    }

    void MlmFwdT<T>(Tensor hidden, Tensor weight, Tensor? bias, long[] lab, int ignore, Tensor loss, Tensor lse) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = hidden.Shape[0], h = hidden.Shape[1], v = weight.Shape[0];
        var m = new T[n]; Array.Fill(m, T.NegativeInfinity);
        var l = new T[n];
        var tgt = new T[n];
        var bv = ReadBias<T>(bias);
        int tile = Tile(n, v);
        var buf = new T[(long)n * tile];
        for (int v0 = 0; v0 < v; v0 += tile)
        {
            int tv = Math.Min(tile, v - v0);
            TileLogits(hidden, weight, bv, n, h, v0, tv, buf);
            Par.Rows(n, tv, (r0, r1) =>
            {
                for (long i = r0; i < r1; i++)
                {
                    var x = buf.AsSpan((int)(i * tv), tv);
                    T tmax = TensorPrimitives.Max<T>(x);
                    T mn = T.Max(m[i], tmax);
                    T sum = T.Zero;
                    foreach (var e in x) sum += T.Exp(e - mn);
                    l[i] = (T.IsNegativeInfinity(m[i]) ? T.Zero : l[i] * T.Exp(m[i] - mn)) + sum;
                    m[i] = mn;
                    long t = lab[i];
                    if (t >= v0 && t < v0 + tv) tgt[i] = x[(int)(t - v0)];
                }
            });
        }
        var lv = new T[n]; var lo = new T[n];
        for (int i = 0; i < n; i++)
        {
            lv[i] = m[i] + T.Log(l[i]);
            lo[i] = lab[i] == ignore ? T.Zero : lv[i] - tgt[i];
        }
        HostIO.Write<T>(lse, 0, lv);
        HostIO.Write<T>(loss, 0, lo);
    }

    public void MlmBackward(Tensor hidden, Tensor weight, Tensor? bias, Tensor labels, int ignoreIndex, Tensor lse, Tensor dloss,
                            Tensor? dHidden, Tensor? dWeight, Tensor? dBias)
    {
        Own(hidden, weight, bias, labels, lse, dloss, dHidden, dWeight, dBias);
        var (n, h, v) = MlmShapes(nameof(MlmBackward), hidden, weight, bias, labels);
        if (lse.Numel != n || dloss.Numel != n || !IsFloat(lse.DType) || !IsFloat(dloss.DType)) throw new ArgumentException($"MlmBackward: lse {lse} and dloss {dloss} must be float [{n}]");
        if (dHidden is not null && (dHidden.Numel != (long)n * h || !IsFloat(dHidden.DType))) throw new ArgumentException($"MlmBackward: dHidden {dHidden} must be float [{n},{h}]");
        if (dWeight is not null && (dWeight.Numel != (long)v * h || !IsFloat(dWeight.DType))) throw new ArgumentException($"MlmBackward: dWeight {dWeight} must be float [{v},{h}]");
        if (dBias is not null && (dBias.Numel != v || !IsFloat(dBias.DType))) throw new ArgumentException($"MlmBackward: dBias {dBias} must be float [{v}]");
        var lab = ReadLabels(labels, v, ignoreIndex);
        if (hidden.DType == DType.F64) MlmBwdT<double>(hidden, weight, bias, lab, ignoreIndex, lse, dloss, dHidden, dWeight, dBias);
        else MlmBwdT<float>(hidden, weight, bias, lab, ignoreIndex, lse, dloss, dHidden, dWeight, dBias);
    }

    void MlmBwdT<T>(Tensor hidden, Tensor weight, Tensor? bias, long[] lab, int ignore, Tensor lse, Tensor dloss,
                    Tensor? dHidden, Tensor? dWeight, Tensor? dBias) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (dHidden is null && dWeight is null && dBias is null) return;
        int n = hidden.Shape[0], h = hidden.Shape[1], v = weight.Shape[0];
        var lv = ReadAll<T>(lse); var dl = ReadAll<T>(dloss);
        var bv = ReadBias<T>(bias);
        int tile = Tile(n, v);
        var buf = new T[(long)n * tile];
        var ct = typeof(T) == typeof(double) ? DType.F64 : DType.F32;
        // The GEMMs take G in the weights' dtype (A and B share one), so bf16 runs round G like the GPU does.
        bool convert = weight.DType != ct;
        using var gq = convert ? _be.Empty(new[] { n, tile }, weight.DType) : null;
        int es = weight.DType.Size();
        for (int v0 = 0; v0 < v; v0 += tile)
        {
            int tv = Math.Min(tile, v - v0);
            TileLogits(hidden, weight, bv, n, h, v0, tv, buf);
            Par.Rows(n, tv, (r0, r1) =>
            {
                for (long i = r0; i < r1; i++)
                {
                    var x = buf.AsSpan((int)(i * tv), tv);
                    long t = lab[i];
                    if (t == ignore) { x.Clear(); continue; }
                    TensorPrimitives.Subtract<T>(x, lv[i], x);
                    TensorPrimitives.Exp<T>(x, x);
                    if (t >= v0 && t < v0 + tv) x[(int)(t - v0)] -= T.One;
                    TensorPrimitives.Multiply<T>(x, dl[i], x);
                }
            });
            if (dBias is not null)
            {
                var col = new T[tv];
                for (int i = 0; i < n; i++) TensorPrimitives.Add<T>(col, buf.AsSpan(i * tv, tv), col);
                HostIO.Accumulate<T>(dBias, v0, col, new T[tv]);
            }
            if (convert) HostIO.Write<T>(gq!.Address, gq.DType, 0, buf.AsSpan(0, n * tv));
            fixed (T* pin = buf)
            {
                nint g = convert ? gq!.Address : (nint)pin;
                nint wTile = weight.Address + (nint)((long)v0 * h * es);
                if (dHidden is not null)
                    CpuGemm.Gemm(new GemmDesc(g, wTile, dHidden.Address, 0, weight.DType, dHidden.DType, dHidden.DType,
                        n, h, tv, false, false, 1f, 1f, 1, 0, 0, 0));
                if (dWeight is not null)
                    CpuGemm.Gemm(new GemmDesc(g, hidden.Address, dWeight.Address + (nint)((long)v0 * h * dWeight.DType.Size()), 0, weight.DType, dWeight.DType, dWeight.DType,
                        tv, h, n, true, false, 1f, 1f, 1, 0, 0, 0));
            }
        }
    }
}
