#!/usr/bin/env python3
"""Sets FiberCuda's custom model kernels beside PyTorch eager, from the files of one GPU run:

    compare_torch.py TORCH.json [--prof BENCH.json] [--jsonl BENCH.jsonl] [--out RATIOS.json]

TORCH.json   tools/bench/torch_model_kernels.py (kernel, case, fwd_ms, fwdbwd_ms; warm back-to-back timing)
BENCH.json   fiber-prof --json (the patch_merge_norm_* and drop_path_res_* cases; their warm column, WarmMs)
BENCH.jsonl  the Gpu benches' FIBER_BENCH_JSONL lines (window and cross attention: kernel, case, fwd_ms, bwd_ms)

Prints one row per case found on both sides: times and speed-up (PyTorch time / engine time) for the forward and
for forward + backward. The issue-3 targets are marked: window attention forward + backward >= 2x eager.
"""
import argparse
import json

ap = argparse.ArgumentParser()
ap.add_argument("torch")
ap.add_argument("--prof")
ap.add_argument("--jsonl")
ap.add_argument("--out")
a = ap.parse_args()

torch_rows = {(r["kernel"], r["case"]): r for r in json.load(open(a.torch))["results"]}
ours = {}
if a.jsonl:
    for line in open(a.jsonl):
        if line.strip():
            r = json.loads(line)
            ours[(r["kernel"], r["case"])] = dict(fwd=r["fwd_ms"], bwd=r["bwd_ms"])
if a.prof:
    for r in json.load(open(a.prof))["results"]:
        op = r["Op"]
        for suffix, part in (("_fwd", "fwd"), ("_bwd", "bwd")):
            if op.endswith(suffix) and r.get("DType") == "bf16":
                ours.setdefault((op[: -len(suffix)], r["Shape"]), {})[part] = r["WarmMs"]

rows = []
print(f"{'kernel':17s} {'case':16s} {'ours fwd':>9s} {'torch fwd':>9s} {'x':>6s} {'ours f+b':>9s} {'torch f+b':>9s} {'x':>6s}")
for key, t in torch_rows.items():
    o = ours.get(key)
    if not o or "fwd" not in o:
        print(f"{key[0]:17s} {key[1]:16s} (no engine timing)")
        continue
    fb = o["fwd"] + o["bwd"] if "bwd" in o else None
    sf = t["fwd_ms"] / o["fwd"] if o["fwd"] > 0 else float("nan")
    sfb = t["fwdbwd_ms"] / fb if fb else float("nan")
    target = ""
    if key[0] == "window_attention":
        target = "  (target >= 2x: " + ("met" if sfb >= 2 else "NOT met") + ")"
    print(f"{key[0]:17s} {key[1]:16s} {o['fwd']:9.3f} {t['fwd_ms']:9.3f} {sf:6.2f} {fb if fb else float('nan'):9.3f} {t['fwdbwd_ms']:9.3f} {sfb:6.2f}{target}")
    rows.append(dict(kernel=key[0], case=key[1], ours_fwd_ms=o["fwd"], ours_fwdbwd_ms=fb, torch_fwd_ms=t["fwd_ms"],
                     torch_fwdbwd_ms=t["fwdbwd_ms"], speedup_fwd=sf, speedup_fwdbwd=sfb))
if a.out:
    json.dump(rows, open(a.out, "w"), indent=1)
