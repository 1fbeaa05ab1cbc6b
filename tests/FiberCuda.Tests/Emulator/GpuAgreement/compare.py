#!/usr/bin/env python3
"""Compares probe_driver outputs of two targets (e.g. emulator vs GPU): exit 0 iff all agree."""
import struct, sys, os, math

def load(path):
    with open(path, "rb") as f:
        kind, count = struct.unpack("<II", f.read(8))
        data = f.read(4 * count)
        tol = f.read(4 * count) if kind == 2 else None
    return kind, count, data, tol

a_dir, b_dir = sys.argv[1], sys.argv[2]
bad = 0
names = sorted(n for n in os.listdir(a_dir) if n.endswith(".bin"))
for name in names:
    ka, ca, da, ta = load(os.path.join(a_dir, name))
    pb = os.path.join(b_dir, name)
    if not os.path.exists(pb):
        print(f"MISSING {name} in {b_dir}"); bad += 1; continue
    kb, cb, db, tb = load(pb)
    if (ka, ca) != (kb, cb):
        print(f"SHAPE {name}: {ka},{ca} vs {kb},{cb}"); bad += 1; continue
    if ka == 0:
        wa, wb = struct.unpack(f"<{ca}I", da), struct.unpack(f"<{cb}I", db)
        diffs = [i for i in range(ca) if wa[i] != wb[i]]
        status = "ok" if not diffs else f"{len(diffs)} words differ, first at {diffs[0]}: {wa[diffs[0]]:#x} vs {wb[diffs[0]]:#x}"
    else:
        fa, fb = struct.unpack(f"<{ca}f", da), struct.unpack(f"<{cb}f", db)
        tol = struct.unpack(f"<{ca}f", ta) if ka == 2 else [2e-6 * max(1.0, abs(x)) for x in fa]
        diffs = [i for i in range(ca) if not (abs(fa[i] - fb[i]) <= tol[i] or (math.isnan(fa[i]) and math.isnan(fb[i])))]
        worst = max((abs(fa[i] - fb[i]) / max(tol[i], 1e-30) for i in range(ca)), default=0)
        status = f"ok (worst {worst:.3f} of tolerance)" if not diffs else f"{len(diffs)} differ, first at {diffs[0]}: {fa[diffs[0]]!r} vs {fb[diffs[0]]!r}"
    if diffs: bad += 1
    print(f"{'PASS' if not diffs else 'FAIL'} {name}: {status}")
print(f"{len(names) - bad}/{len(names)} agree")
sys.exit(1 if bad else 0)
