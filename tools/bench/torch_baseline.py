#!/usr/bin/env python3
"""PyTorch eager baselines for fiber-prof's memory-bound cases, timed the same way
(CUDA events, L2 flushed before every timed run, median of N), plus a same-size
device-to-device copy. Prints a table and writes JSON (argv[1], optional).

Runs on the GPU machine only (it has PyTorch); nothing in the engine imports it."""
import json
import sys

import torch
import torch.nn.functional as F

assert torch.cuda.is_available(), "needs a CUDA GPU"
dev = "cuda"
flush = torch.empty(64 << 20, dtype=torch.float32, device=dev)  # 256 MB > the 60 MB L2
ITERS = 20


def timed(fn):
    for _ in range(3):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ms = []
    for _ in range(ITERS):
        flush.fill_(1.0)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        ms.append(start.elapsed_time(stop))
    ms.sort()
    return ms[len(ms) // 2]


def copy_ms(nbytes):
    a = torch.empty(nbytes // 2 // 4, dtype=torch.float32, device=dev)
    b = torch.empty_like(a)
    return timed(lambda: b.copy_(a))


rows_c = [("8x9216x128", 8 * 9216, 128), ("8x576x512", 8 * 576, 512), ("64x40x768", 64 * 40, 768)]
results = []
big = 1 << 30
ceiling = 2 * big / (copy_ms(2 * big) * 1e-3) / 1e9
print(f"torch {torch.__version__}, copy ceiling {ceiling:.0f} GB/s (1 GiB D2D, read+write)")
for name, r, c in rows_c:
    bf = torch.bfloat16
    x = torch.randn(r, c, device=dev, dtype=bf)
    dy = torch.randn(r, c, device=dev, dtype=bf)
    g = torch.rand(c, device=dev, dtype=torch.float32) + 0.5
    b = torch.randn(c, device=dev, dtype=torch.float32)
    gb, bb = g.to(bf), b.to(bf)
    n, e = r * c, 2
    mean = torch.zeros(r, 1, device=dev)
    rstd = torch.ones(r, 1, device=dev)
    y = torch.softmax(x.float(), -1).to(bf)
    p32, g32 = torch.randn(r, c, device=dev), torch.randn(r, c, device=dev)
    m32, v32 = torch.zeros_like(p32), torch.zeros_like(p32)
    step = torch.tensor(1.0, device=dev)
    cases = [
        ("layernorm_fwd", 2 * n * e, lambda: F.layer_norm(x, (c,), gb, bb, 1e-5)),
        ("layernorm_bwd", 3 * n * e, lambda: torch.ops.aten.native_layer_norm_backward(dy, x, (c,), mean, rstd, gb, bb, [True, True, True])),
        ("bias_gelu_fwd", 2 * n * e, lambda: F.gelu(x + bb)),
        ("bias_gelu_bwd", 3 * n * e, lambda: torch.ops.aten.gelu_backward(dy, x)),
        ("softmax_fwd", 2 * n * e, lambda: torch.softmax(x, -1)),
        ("softmax_bwd", 3 * n * e, lambda: torch.ops.aten._softmax_backward_data(dy, y, -1, bf)),
        ("adamw", 7 * n * 4, lambda: torch._fused_adamw_([p32], [g32], [m32], [v32], [], [step], lr=1e-3, beta1=0.9, beta2=0.98,
                                                         weight_decay=0.01, eps=1e-8, amsgrad=False, maximize=False)),
    ]
    for op, nbytes, fn in cases:
        ms = timed(fn)
        same = copy_ms(int(nbytes))
        gbps = nbytes / (ms * 1e-3) / 1e9
        results.append(dict(op=op, shape=name, ms=ms, gbps=gbps, pct_copy=100 * gbps / ceiling, copy_same_bytes_ms=same,
                            pct_copy_same_bytes=100 * same / ms))
        print(f"{op:15s} {name:12s} {ms * 1e3:8.1f} us {gbps:7.0f} GB/s {100 * gbps / ceiling:5.1f}% of copy; "
              f"a same-size copy takes {same * 1e3:6.1f} us")
if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as f:
        json.dump(dict(torch=torch.__version__, copy_gbps=ceiling, results=results), f, indent=1)
