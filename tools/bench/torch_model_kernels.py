#!/usr/bin/env python3
"""PyTorch eager equivalents of FiberCuda's custom model kernels (issue 3), at the shapes and under the names of the
engine's GPU benches (tests/.../Attention/*GpuBench.cs, tools/fiber-prof cases), timed the way those benches time
(one warm-up call, then CUDA events around 5 back-to-back calls, the mean; fiber-prof's "warm" column). bf16 throughout.

  window attention  the attention core the fused kernel replaces, as the official Swin block runs it around qkv/proj:
                    roll(-s) + window partition of qkv, q·scale @ kᵀ, + gathered relative-position bias, + the -100
                    shift mask, softmax, @ v, reverse partition + roll(+s). Forward, and forward + backward (grads of
                    qkv and the bias table).
  cross attention   q @ kᵀ·scale + key padding mask, softmax, @ v (image->text with the text mask; text->image without).
  patch merge + LN  the four strided slices, cat, LayerNorm(4C).
  drop path + res   residual + y * keep[b] / (1 - p).

Prints a table and writes JSON (argv[1], optional): {"results": [{"kernel", "case", "fwd_ms", "fwdbwd_ms"}]}.
Runs on the GPU machine only (it has PyTorch); nothing in the engine imports it.
"""
import json
import sys

import torch
import torch.nn.functional as F

# FIBER_TORCH_SMOKE=1: run every case once on the CPU at toy sizes (checks the script, times nothing).
SMOKE = bool(int(__import__("os").environ.get("FIBER_TORCH_SMOKE", "0")))
assert SMOKE or torch.cuda.is_available(), "needs a CUDA GPU"
dev, bf = ("cpu" if SMOKE else "cuda"), torch.bfloat16
torch.manual_seed(0)


def timed(fn):
    fn()
    if SMOKE:
        return 0.0
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / 5


def fwd_and_fwdbwd(make_inputs, forward):
    """Times forward alone (no graph) and forward + backward of sum(out * dy)."""
    inputs = make_inputs()
    with torch.no_grad():
        out = forward(*inputs)
    dy = torch.randn_like(out)
    with torch.no_grad():
        f = timed(lambda: forward(*inputs))
    leaves = [t.requires_grad_() for t in inputs if t.is_floating_point()]

    def step():
        for t in leaves:
            t.grad = None
        forward(*inputs).backward(dy)
    return f, timed(step)


# ------------------------------------------------------------------ window attention
def rel_index(w):
    c = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")).flatten(1)
    r = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0) + (w - 1)
    return (r[..., 0] * (2 * w - 1) + r[..., 1]).to(dev)


def shift_mask(H, W, w, s):
    img = torch.zeros(1, H, W, 1, device=dev)
    cnt = 0
    for hs in (slice(0, -w), slice(-w, -s), slice(-s, None)):
        for ws in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    mw = img.view(1, H // w, w, W // w, w, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w)
    m = mw.unsqueeze(1) - mw.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0).to(bf)


def window_attention(B, Hv, Wv, nH, w, s):
    """Hv×Wv stored tokens; a map that is not a multiple of w is padded (qkv rows of zeros, as the official zero-padded
    map gives before the bias) and cropped, as the detection Swin does around its attention."""
    H, W = -(-Hv // w) * w, -(-Wv // w) * w
    C, N, d = nH * 32, w * w, 32
    nW = (H // w) * (W // w)
    idx = rel_index(w).view(-1)
    mask = shift_mask(H, W, w, s) if s > 0 else None

    def make():
        return (torch.randn(B, Hv * Wv, 3 * C, device=dev, dtype=bf), (torch.rand((2 * w - 1) ** 2, nH, device=dev) - 0.5).to(bf))

    def forward(qkv, table):
        x = qkv.view(B, Hv, Wv, 3 * C)
        if (H, W) != (Hv, Wv):
            x = F.pad(x, (0, 0, 0, W - Wv, 0, H - Hv))
        if s > 0:
            x = torch.roll(x, (-s, -s), (1, 2))
        x = x.view(B, H // w, w, W // w, w, 3 * C).permute(0, 1, 3, 2, 4, 5).reshape(-1, N, 3, nH, d).permute(2, 0, 3, 1, 4)
        q, k, v = x[0] * d ** -0.5, x[1], x[2]
        a = q @ k.transpose(-2, -1) + table[idx].view(N, N, nH).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            a = (a.view(B, nW, nH, N, N) + mask.unsqueeze(1).unsqueeze(0)).view(-1, nH, N, N)
        o = (a.softmax(-1) @ v).transpose(1, 2).reshape(B, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
        if s > 0:
            o = torch.roll(o, (s, s), (1, 2))
        if (H, W) != (Hv, Wv):
            o = o[:, :Hv, :Wv]
        return o.reshape(B, Hv * Wv, C)
    return make, forward


# ------------------------------------------------------------------ cross attention
def cross_attention(B, Lq, Lk, nH, d, masked):
    C = nH * d
    keymask = torch.zeros(B, Lk, device=dev, dtype=bf)
    if masked:
        keymask[:, Lk * 3 // 4:] = -10000.0  # a quarter of the text is padding

    def make():
        return tuple(torch.randn(B, L, C, device=dev, dtype=bf) for L in (Lq, Lk, Lk))

    def forward(q, k, v):
        sp = lambda t: t.view(B, t.shape[1], nH, d).transpose(1, 2)
        a = sp(q) @ sp(k).transpose(-2, -1) * d ** -0.5
        if masked:
            a = a + keymask.view(B, 1, 1, Lk)
        return (a.softmax(-1) @ sp(v)).transpose(1, 2).reshape(B, Lq, C)
    return make, forward


# ------------------------------------------------------------------ patch merging + LayerNorm, drop path + residual
def patch_merge_norm(B, H, W, C):
    def make():
        return (torch.randn(B, H * W, C, device=dev, dtype=bf), torch.rand(4 * C, device=dev, dtype=bf) + 0.5, torch.randn(4 * C, device=dev, dtype=bf))

    def forward(x, g, b):
        x = x.view(B, H, W, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1).view(B, -1, 4 * C)
        return F.layer_norm(x, (4 * C,), g, b, 1e-5)
    return make, forward


def drop_path_res(B, per, p=0.1):
    keep = ((torch.rand(B, 1, device=dev) >= p).to(bf) / (1 - p)).to(bf)

    def make():
        return (torch.randn(B, per, device=dev, dtype=bf), torch.randn(B, per, device=dev, dtype=bf))

    def forward(y, res):
        return res + y * keep
    return make, forward


CASES = [
    ("window_attention", "384 stage1 w12", window_attention(8, 96, 96, 4, 12, 6)),
    ("window_attention", "384 stage3 w12", window_attention(8, 24, 24, 16, 12, 6)),
    ("window_attention", "576 stage1 w18", window_attention(8, 144, 144, 4, 18, 9)),
    ("window_attention", "224 stage1 w7", window_attention(8, 56, 56, 4, 7, 3)),
    ("window_attention", "fine stage1 w12", window_attention(2, 272, 200, 4, 12, 6)),
    ("window_attention", "fine stage3 w12", window_attention(2, 68, 50, 16, 12, 6)),
    ("cross_attention", "384 i2t stage3", cross_attention(8, 576, 40, 16, 32, True)),
    ("cross_attention", "384 i2t stage4", cross_attention(8, 144, 40, 32, 32, True)),
    ("cross_attention", "384 t2i stage3", cross_attention(8, 40, 576, 12, 64, False)),
    ("cross_attention", "384 t2i stage4", cross_attention(8, 40, 144, 12, 64, False)),
    ("cross_attention", "fine t2i 3400", cross_attention(2, 256, 3400, 12, 64, False)),
    ("cross_attention", "fine i2t 3400", cross_attention(2, 3400, 256, 16, 32, True)),
    ("patch_merge_norm", "8x96x96x128", patch_merge_norm(8, 96, 96, 128)),
    ("patch_merge_norm", "8x48x48x256", patch_merge_norm(8, 48, 48, 256)),
    ("patch_merge_norm", "8x24x24x512", patch_merge_norm(8, 24, 24, 512)),
    ("drop_path_res", "8x9216x128", drop_path_res(8, 9216 * 128)),
    ("drop_path_res", "8x144x1024", drop_path_res(8, 144 * 1024)),
]

if SMOKE:
    CASES = [
        ("window_attention", "toy w4 shift", window_attention(1, 8, 12, 2, 4, 2)),
        ("window_attention", "toy w4", window_attention(1, 8, 8, 1, 4, 0)),
        ("window_attention", "toy w4 padded", window_attention(1, 6, 7, 1, 4, 2)),
        ("cross_attention", "toy i2t", cross_attention(2, 9, 8, 2, 32, True)),
        ("patch_merge_norm", "toy", patch_merge_norm(2, 4, 6, 8)),
        ("drop_path_res", "toy", drop_path_res(3, 10)),
    ]
results = []
print(f"torch {torch.__version__}, {'cpu smoke run' if SMOKE else torch.cuda.get_device_name()}, bf16, eager")
for kernel, case, (make, forward) in CASES:
    f, fb = fwd_and_fwdbwd(make, forward)
    results.append(dict(kernel=kernel, case=case, fwd_ms=f, fwdbwd_ms=fb))
    print(f"{kernel:17s} {case:16s} fwd {f:8.3f} ms   fwd+bwd {fb:8.3f} ms")
if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as fh:
        json.dump(dict(torch=torch.__version__, device="cpu" if SMOKE else torch.cuda.get_device_name(), results=results), fh, indent=1)
