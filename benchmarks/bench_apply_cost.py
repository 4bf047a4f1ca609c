"""What apply() and revert() cost: the first apply in a fresh interpreter, then apply/revert cycles.

    python benchmarks/bench_apply_cost.py [--cycles 100] [--fresh 3] [--baseline DIR]

Each measurement runs in fresh interpreters (torch and transformers imported first, as a model
script has them): "first apply" is the median over ``--fresh`` interpreters of the first
``apply()`` (it builds the replacements and the index of module globals), "cycle" the best of
``--cycles`` apply+revert cycles after it (the cost on a quiet core; the median, which on a shared
machine swings 2x between runs, is printed for the default set), for the default set, each generic
patch and each recipe. Times are the process's CPU time (time descheduled does not count).
``--baseline DIR``: the same measurements, side by side, for another checkout of the project (e.g.
``git worktree add /tmp/old <commit>``), imported from DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 5.0

CHILD = r"""
import json, statistics, sys, time
import torch, transformers.activations
t = time.process_time(); import ascend_patch; imported = time.process_time() - t
from ascend_patch.api import known_names
cycles, fresh_only = int(sys.argv[1]), sys.argv[2] == "first"
names = ["(default)"] + sorted(known_names())
args = lambda name: () if name == "(default)" else (name,)
t = time.process_time(); ascend_patch.apply(device="cpu"); first = time.process_time() - t
t = time.process_time(); ascend_patch.revert(); first_revert = time.process_time() - t
out = {"import": imported, "first_apply": first, "first_revert": first_revert, "cycles": {}}
if not fresh_only:
    for name in names:
        ascend_patch.apply(*args(name), device="cpu"); ascend_patch.revert()  # its own first apply
        times = []
        for _ in range(cycles):
            t = time.process_time()
            ascend_patch.apply(*args(name), device="cpu")
            ascend_patch.revert()
            times.append(time.process_time() - t)
        out["cycles"][name] = min(times)
        out.setdefault("median", {})[name] = statistics.median(times)
print(json.dumps(out))
"""


def measure(source: Path, cycles: int, fresh: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source), "ASCEND_PATCH_LOG": "summary"}
    runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD, str(cycles), "first" if i else "all"],
                                      capture_output=True, text=True, check=True, env=env, cwd=source).stdout)
            for i in range(fresh)]
    med = lambda key: statistics.median(r[key] for r in runs)
    return {"import": med("import"), "first_apply": med("first_apply"), "first_revert": med("first_revert"),
            "cycles": runs[0]["cycles"], "median": runs[0]["median"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100, help="apply/revert cycles per name (default 100)")
    parser.add_argument("--fresh", type=int, default=3, help="fresh interpreters for the first apply (default 3)")
    parser.add_argument("--baseline", type=Path, help="another checkout of the project, measured side by side")
    args = parser.parse_args()
    sides = {"this tree": measure(ROOT, args.cycles, args.fresh)}
    if args.baseline:
        sides["baseline"] = measure(args.baseline.resolve(), args.cycles, args.fresh)
    header = f"{'ms (CPU)':<22}" + "".join(f"{side:>12}" for side in sides)
    if args.baseline:
        header += f"{'ratio':>8}"
    print(header)

    def row(label: str, values: list[float]) -> None:
        line = f"{label:<22}" + "".join(f"{1e3 * v:>12.2f}" for v in values)
        if len(values) == 2 and values[0]:
            line += f"{values[1] / values[0]:>7.1f}x"
        print(line)

    for key, label in (("import", "import ascend_patch"), ("first_apply", "first apply()"),
                       ("first_revert", "first revert()")):
        row(label, [s[key] for s in sides.values()])
    for name in sides["this tree"]["cycles"]:
        row(f"cycle {name}", [s["cycles"].get(name, float("nan")) for s in sides.values()])
    row("  median (default)", [s["median"]["(default)"] for s in sides.values()])
    cycle = sides["this tree"]["cycles"]["(default)"] * 1e3
    print(f"\ndefault apply/revert cycle (best): {cycle:.2f} ms, target <= {TARGET_MS} ms: "
          f"{'met' if cycle <= TARGET_MS else 'NOT met'}")


if __name__ == "__main__":
    main()
