using System.Runtime.InteropServices;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cuda;

public sealed unsafe partial class CudaBackend
{
    // =============================================================================================
    // optimizer
    // =============================================================================================

    [StructLayout(LayoutKind.Sequential)]
    struct SumsqEntry { public long Ptr, N; public int Dt, Pad; }

    [StructLayout(LayoutKind.Sequential)]
    struct AdamWEntry
    {
        public long Param, Grad, M, V, Master, N;
        public float Lr, Wd;
        public int ParamDt, GradDt;
    }

    public void SumOfSquares(IReadOnlyList<Tensor> xs, Tensor y)
    {
        Small(y, 1, nameof(SumOfSquares), "y");
        if (y.DType != DType.F32) throw new ArgumentException($"SumOfSquares: y must be f32, got {y.DType.Name()}");
        var list = xs.Where(t => { Float(t, "xs[i]"); return t.Numel > 0; }).ToArray();
        if (list.Length == 0) { Fill(y, 0); return; }
        if (list.Length > 65535) throw new ArgumentException("SumOfSquares: more than 65535 tensors");
        var table = new SumsqEntry[list.Length];
        long maxN = 0;
        for (int i = 0; i < list.Length; i++)
        {
            table[i] = new SumsqEntry { Ptr = list[i].Address, N = list[i].Numel, Dt = Dt(list[i]) };
            maxN = Math.Max(maxN, list[i].Numel);
        }
        int bx = Math.Max(1, Math.Min(Grid(maxN), Math.Max(1, _maxBlocks * 4 / list.Length)));
        long tableBytes = Align(table.Length * (long)sizeof(SumsqEntry));
        nint buf = Scratch(tableBytes + (long)bx * list.Length * 4);
        UploadTable(buf, table);
        nint pt = buf, partial = buf + (nint)tableBytes;
        void** a = stackalloc void*[] { &pt, &partial };
        Launch("reduce.cu", "sumsq_multi", new Dim3((uint)bx, (uint)list.Length), Threads, 0, a);
        SumFinal(partial, (long)bx * list.Length, y);
    }

    public void AdamW(IReadOnlyList<AdamWTensor> group, float beta1, float beta2, float eps, int step, float gradScale)
    {
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), step, "AdamW: step counts from 1");
        var items = group.Where(t => t.Param.Numel > 0).ToArray();
        foreach (var t in group) CheckAdam(t);
        if (items.Length == 0) return;
        if (items.Length > 65535) throw new ArgumentException("AdamW: more than 65535 tensors in one group");
        var table = new AdamWEntry[items.Length];
        long maxN = 0;
        for (int i = 0; i < items.Length; i++)
        {
            var t = items[i];
            table[i] = new AdamWEntry
            {
                Param = t.Param.Address, Grad = t.Grad.Address, M = t.M.Address, V = t.V.Address,
                Master = t.Master?.Address ?? 0, N = t.Param.Numel, Lr = t.Lr, Wd = t.WeightDecay,
                ParamDt = Dt(t.Param), GradDt = Dt(t.Grad),
            };
            maxN = Math.Max(maxN, t.Param.Numel);
        }
        nint buf = AdamTable(table);
        float bc1 = (float)(1 - Math.Pow(beta1, step)), bc2 = (float)(1 - Math.Pow(beta2, step));
        // Four elements per thread and step (adamw.cu's vector path).
        int bx = Math.Max(1, Math.Min(Grid(maxN, 4), Math.Max(1, _maxBlocks * 4 / items.Length)));
        nint pt = buf;
        void** a = stackalloc void*[] { &pt, &beta1, &beta2, &eps, &bc1, &bc2, &gradScale };
        Launch("adamw.cu", "adamw_multi", new Dim3((uint)bx, (uint)items.Length), Threads, 0, a);
    }

    void CheckAdam(in AdamWTensor t)
    {
        const string op = nameof(AdamW);
        Float(t.Param, "Param"); Float(t.Grad, "Grad"); Mine(t.M, "M"); Mine(t.V, "V");
        long n = t.Param.Numel;
        foreach (var (u, name) in new[] { (t.Grad, "Grad"), (t.M, "M"), (t.V, "V") })
            if (u.Numel != n) throw new ArgumentException($"{op}: {name} {Describe(u)} does not match Param {Describe(t.Param)}");
        if (t.M.DType != DType.F32 || t.V.DType != DType.F32) throw new ArgumentException($"{op}: M and V must be f32");
        if (t.Master is { } m)
        {
            Mine(m, "Master");
            if (m.DType != DType.F32 || m.Numel != n) throw new ArgumentException($"{op}: Master must be f32 with Param's element count, got {Describe(m)}");
        }
    }

    /// <summary>
    /// AdamW's table lives in its own device buffer and is uploaded only when it changed: the upload
    /// synchronises the stream (CopyHostToDevice), which costs more than the kernel on small groups.
    /// Nothing else writes the buffer, so an identical table means identical device contents.
    /// </summary>
    nint AdamTable(AdamWEntry[] table)
    {
        long bytes = table.Length * (long)sizeof(AdamWEntry);
        if (_adamTable != 0 && _adamTableHost.Length == table.Length && MemoryMarshal.AsBytes(table.AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(_adamTableHost.AsSpan())))
            return _adamTable;
        if (bytes > _adamTableBytes)
        {
            if (_adamTable != 0) _mem.Free(_adamTable);
            _adamTableBytes = Math.Max(bytes, 4096);
            _adamTable = _mem.Alloc(_adamTableBytes);
        }
        UploadTable(_adamTable, table);
        _adamTableHost = (AdamWEntry[])table.Clone();
        return _adamTable;
    }

    /// <summary>Copies a small table (AdamW, SumOfSquares) to device scratch; the copy is stream-ordered after earlier readers.</summary>
    void UploadTable<T>(nint dst, T[] table) where T : unmanaged
    {
        fixed (T* p = table) _dev.CopyHostToDevice(dst, p, (long)table.Length * sizeof(T));
    }
}
