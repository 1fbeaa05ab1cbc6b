using System.Runtime.CompilerServices;
using FiberCuda.Backends.Cpu;
using FiberCuda.Backends.Cuda;
using FiberCuda.Tensors;

namespace FiberCuda.Backends;

/// <summary>
/// Geometry of one fused Swin window-attention call. The attended map is <see cref="Height"/>×<see cref="Width"/>
/// tokens (both multiples of <see cref="Window"/>), of which the top-left <see cref="ValidHeight"/>×<see cref="ValidWidth"/>
/// are stored (the detection Swin's map before its zero padding); <see cref="Heads"/> heads of <see cref="HeadDim"/>
/// channels (32: the CUDA kernel maps one channel to one lane), cyclic shift <see cref="Shift"/> (0 or w/2; the shift
/// mask, on the padded map, is applied whenever it is &gt; 0) and score scale (d^-0.5).
/// </summary>
public readonly record struct WindowAttentionShape(int Batch, int Height, int Width, int Heads, int HeadDim, int Window, int Shift, float Scale)
{
    readonly int _vh, _vw;
    /// <summary>Stored rows (default <see cref="Height"/>); the rows below are padding whose q, k, v are the pad row.</summary>
    public int ValidHeight { get => _vh == 0 ? Height : _vh; init => _vh = value; }
    /// <summary>Stored columns (default <see cref="Width"/>).</summary>
    public int ValidWidth { get => _vw == 0 ? Width : _vw; init => _vw = value; }
    public bool Padded => ValidHeight != Height || ValidWidth != Width;

    /// <summary>Tokens per window, w².</summary>
    public int N => Window * Window;
    public int WindowsPerImage => (Height / Window) * (Width / Window);
    /// <summary>All windows of the batch, B·nW.</summary>
    public int Windows => Batch * WindowsPerImage;
    public int Channels => Heads * HeadDim;
    /// <summary>Stored tokens per image (qkv and y rows), ValidHeight·ValidWidth.</summary>
    public int Tokens => ValidHeight * ValidWidth;
    /// <summary>Rows of the bias table, (2w−1)².</summary>
    public int TableRows => (2 * Window - 1) * (2 * Window - 1);

    public int[] QkvShape => [Batch, Tokens, 3 * Channels];
    public int[] OutShape => [Batch, Tokens, Channels];
    public int[] LseShape => [Windows, Heads, N];
    public int[] TableShape => [TableRows, Heads];

    public void Validate()
    {
        if (Batch < 1 || Heads < 1 || HeadDim < 1 || Window < 1) throw new ArgumentException($"window attention: bad geometry {this}");
        if (Height % Window != 0 || Width % Window != 0 || Height < Window || Width < Window)
            throw new ArgumentException($"window attention: image {Height}x{Width} is not a multiple of window {Window} (pad it first)");
        if (Shift < 0 || Shift >= Window) throw new ArgumentException($"window attention: shift {Shift} is outside [0, {Window})");
        if (ValidHeight <= Height - Window || ValidHeight > Height || ValidWidth <= Width - Window || ValidWidth > Width)
            throw new ArgumentException($"window attention: stored {ValidHeight}x{ValidWidth} is not {Height}x{Width} less a partial window");
    }

    /// <summary>The geometry for a stored <paramref name="height"/>×<paramref name="width"/> map padded up to whole windows.</summary>
    public static WindowAttentionShape ForMap(int batch, int height, int width, int heads, int headDim, int window, int shift, float scale) =>
        new(batch, (height + window - 1) / window * window, (width + window - 1) / window * window, heads, headDim, window, shift, scale)
        { ValidHeight = height, ValidWidth = width };

    /// <summary>Checks the pad row [3C] (qkv's dtype) and its gradient, when given.</summary>
    public void CheckPad(Tensor qkv, Tensor? pad, Tensor? dpad)
    {
        foreach (var (t, what) in new[] { (pad, "pad"), (dpad, "dpad") })
        {
            if (t is null) continue;
            if (t.Numel != 3L * Channels) throw new ArgumentException($"window attention: {what} {t} has {t.Numel} elements, 3·{Channels} expected");
            if (t.DType != qkv.DType) throw new ArgumentException($"window attention: {what} {t} must have qkv's dtype {qkv.DType.Name()}");
        }
    }

    /// <summary>Checks the tensors of a call against this geometry (element counts; shapes may be any view of them).</summary>
    public void Check(Tensor qkv, Tensor table, Tensor? y, Tensor? lse)
    {
        Validate();
        Need(qkv, (long)Batch * Tokens * 3 * Channels, "qkv");
        Need(table, (long)TableRows * Heads, "table");
        if (y is not null) { Need(y, (long)Batch * Tokens * Channels, "y"); if (y.DType != qkv.DType) throw new ArgumentException($"window attention: y {y} must have qkv's dtype {qkv.DType.Name()}"); }
        if (lse is not null) Need(lse, (long)Windows * Heads * N, "lse");
        if (!qkv.DType.IsFloat() || !table.DType.IsFloat()) throw new ArgumentException("window attention: float tensors only");
    }

    static void Need(Tensor t, long n, string what)
    {
        if (t.Numel != n) throw new ArgumentException($"window attention: {what} {t} has {t.Numel} elements, {n} expected");
    }
}

/// <summary>
/// Fused Swin (shifted-)window attention, an op outside <see cref="IBackend"/> (one implementation per
/// backend kind, found with <see cref="WindowAttentionOps.For"/>).
///
/// Forward: qkv [B, H·W, 3C] in token order (the qkv Linear output, viewed [B, H·W, 3, nH, d]) →
/// roll by −s, window partition, per window and head S = scale·q·kᵀ + table[rel(i,j), h] + mask
/// (−100 between different regions of the shifted image, official Swin attn_mask), P = softmax(S),
/// O = P·v, heads merged, reverse partition and roll by +s → y [B, H·W, C] in token order.
/// lse [B·nW, nH, w²] (f32; f64 for f64 inputs) is the per-row logsumexp of S, in window order
/// (window index b·nW + wr·(W/w) + wc, row = token i of the window, row-major).
///
/// Backward (gradient convention: +=): recomputes P from q, k and lse; dqkv += [dQ | dK | dV] in qkv's
/// layout; dtable (when given, [(2w−1)², nH]) += Σ over windows and pairs with that relative offset of dS.
///
/// Partial windows (<see cref="WindowAttentionShape.Padded"/>): qkv and y hold only the stored
/// ValidHeight×ValidWidth tokens; the padding tokens of the Height×Width map take their q, k, v from
/// <c>pad</c> [3C] (the qkv Linear's bias, as for the official zero-padded normalised map; zeros when null),
/// take part in the attention of their windows and are not stored. Their outputs have no gradient, so in the
/// backward only their k and v receive one: dpad (when given, [3C]) += Σ over padding tokens of [0 | dK | dV].
/// </summary>
public interface IWindowAttentionOps
{
    void Forward(Tensor qkv, Tensor table, in WindowAttentionShape a, Tensor y, Tensor lse, Tensor? pad = null);
    void Backward(Tensor qkv, Tensor table, in WindowAttentionShape a, Tensor y, Tensor lse, Tensor dy, Tensor dqkv, Tensor? dtable,
                  Tensor? pad = null, Tensor? dpad = null);
}

public static class WindowAttentionOps
{
    static readonly ConditionalWeakTable<IBackend, IWindowAttentionOps> Cache = new();

    /// <summary>The implementation for <paramref name="backend"/> (CPU reference or CUDA kernels).</summary>
    public static IWindowAttentionOps For(IBackend backend) => Cache.GetValue(backend, b => b switch
    {
        CpuBackend => new CpuWindowAttention(),
        CudaBackend cb => new CudaWindowAttention(cb),
        _ => throw new NotSupportedException($"window attention is not implemented for backend {b.Name}"),
    });

    /// <summary>
    /// Whether the fused op runs this geometry on <paramref name="backend"/>: the CPU reference takes any;
    /// the CUDA kernel needs head dim 32 and w² ≤ 352 (FIBER-B: d = 32, w = 7, 12 or 18).
    /// </summary>
    public static bool Supports(IBackend backend, int headDim, int window) => backend switch
    {
        CpuBackend => true,
        CudaBackend => headDim == 32 && window * window <= 352,
        _ => false,
    };
}
