"""`edgekit sweep` engines, measured: the same 6 cells with --jobs 1, the local pool and Ray.

    python benchmarks/sweep.py [--out benchmarks/results.md]

The digits CNN (edgekit.demo) and its data; recipes int8, fp16, qat-int8 and prune50-int8 at
sparsity 0.3/0.5/0.7 = 6 cells, every format. Each engine runs the sweep afresh into its own
folder, in one session, so the ratios compare like with like on this (shared, noisy) machine:

- wall time of the cells and of the whole sweep, and the per-cell peak memory;
- Ray on a one-node cluster started here (127.0.0.2, as many CPUs as this machine has);
- Ray's per-task overhead: an empty task in a fresh worker (max_calls=1, as the cells use),
  and the sweep's own (slots × cells wall − the cells' own seconds) / cells;
- the expected speed-up on N such machines, from the measured per-cell times: cells are
  independent, so the makespan is the longest-first schedule of (cell + overhead) on N × slots.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sections import markers, write_section

HERE = Path(__file__).resolve().parent
RECIPES = ["--recipes", "int8,fp16,qat-int8,prune50-int8", "--grid", "sparsity=0.3,0.5,0.7"]


def make_inputs(root: Path) -> Path:
    import numpy as np

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from edgekit.demo import train_digits_model

    x, y, x_val, y_val = train_digits_model(root / "digits.h5")
    np.savez(root / "calib.npz", x=x, y=y)
    np.savez(root / "val.npz", x=x_val, y=y_val)
    return root / "digits.h5"


def sweep(root: Path, name: str, extra: list[str]) -> dict:
    edgekit = Path(sys.executable).with_name("edgekit")
    started = time.perf_counter()
    done = subprocess.run([str(edgekit), "sweep", str(root / "digits.h5"), "--data", str(root / "calib.npz"),
                           "--val", str(root / "val.npz"), *RECIPES, "--devices", "host,rpi4", "-o", str(root / name),
                           "-q", *extra], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: sweep failed: {done.stderr[-2000:]}")
    result = json.loads((root / name / "sweep.json").read_text())
    result["wall_s"] = time.perf_counter() - started
    return result


def start_ray(temp: str, cpus: int) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    subprocess.run([str(Path(sys.executable).with_name("ray")), "start", "--head", "--node-ip-address=127.0.0.2",
                    f"--port={port}", "--include-dashboard=false", f"--num-cpus={cpus}", f"--temp-dir={temp}",
                    "--disable-usage-stats"], check=True, capture_output=True, env=_ray_env())
    return f"127.0.0.2:{port}"


def _ray_env() -> dict:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def empty_task_overhead(address: str, tasks: int = 10) -> dict:
    """Seconds for an empty task in a fresh worker, one after another and `cpus` at a time."""
    import ray

    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    try:
        @ray.remote(max_calls=1)
        def empty():
            return os.getpid()

        ray.get(empty.remote())  # the first worker pool start
        started = time.perf_counter()
        for _ in range(tasks):
            ray.get(empty.remote())
        serial = (time.perf_counter() - started) / tasks
        blob = os.urandom(1 << 20)
        started = time.perf_counter()
        for _ in range(tasks):
            ray.put(blob)
        put_mb = (time.perf_counter() - started) / tasks
    finally:
        ray.shutdown()
    return {"empty_task_fresh_worker_s": serial, "put_1mb_s": put_mb}


def makespan(seconds: list[float], slots: int) -> float:
    """Longest-first list scheduling: each cell to the slot that frees first."""
    ends = [0.0] * slots
    for t in sorted(seconds, reverse=True):
        i = ends.index(min(ends))
        ends[i] += t
    return max(ends)


def overhead_per_cell(result: dict, slots: int) -> float:
    own = sum(c["seconds"] for c in result["cells"])
    return (result["timings_s"]["cells"] * slots - own) / len(result["cells"])


def render(runs: dict, ray_overhead: dict, cores: int) -> str:
    begin, end = markers("sweep.py")
    one, pool, on_ray = runs["--jobs 1"], runs["local pool"], runs["ray"]
    slots = {"--jobs 1": 1, "local pool": pool["engine"]["jobs"], "ray": cores}
    lines = [begin, "## Sweep engines (benchmarks/sweep.py)", "",
             f"`python benchmarks/sweep.py` on this machine ({cores} cores): the digits CNN, recipes int8, fp16, "
             "qat-int8 and prune50-int8 × sparsity 0.3/0.5/0.7 = 6 cells, every format, devices host and rpi4. "
             "Each engine runs the sweep afresh; one session, so compare ratios.", "",
             "| engine | cells at a time | cells wall s | vs --jobs 1 | whole sweep s | mean cell s | "
             "largest cell peak MiB | overhead per cell s |", "|---|---|---|---|---|---|---|---|"]
    for name, result in runs.items():
        cells = result["cells"]
        lines.append(f"| {name} | {slots[name]} | {result['timings_s']['cells']:.1f} | "
                     f"{one['timings_s']['cells'] / result['timings_s']['cells']:.2f}× | {result['wall_s']:.1f} | "
                     f"{sum(c['seconds'] for c in cells) / len(cells):.1f} | "
                     f"{max(c['peak_rss_mb'] for c in cells):,.0f} | {overhead_per_cell(result, slots[name]):.2f} |")
    same = [c["key"] for c in one["cells"]] == [c["key"] for c in pool["cells"]] == [c["key"] for c in on_ray["cells"]]
    top1 = {n: {p["id"]: p["top1"] for p in r["points"]} for n, r in runs.items()}
    lines += ["", f"- Same cells (keys) on every engine: {same}; same top-1 for every artifact: "
              f"{top1['--jobs 1'] == top1['local pool'] == top1['ray']}.",
              f"- Ray per task: an empty task in a fresh worker (max_calls=1) takes "
              f"{ray_overhead['empty_task_fresh_worker_s']:.2f} s; putting 1 MiB in the object store "
              f"{1e3 * ray_overhead['put_1mb_s']:.1f} ms (the model and data go in once per sweep).",
              "- Per-cell seconds (Ray, 1 CPU each): " + ", ".join(
                  f"{c['name']} {c['seconds']:.1f}" for c in on_ray["cells"]), "",
              "Expected cells wall time on N machines like this one (independent cells, longest first, "
              f"{cores} cells per machine, each cell's Ray time + {max(overhead_per_cell(on_ray, cores), 0):.2f} s "
              "overhead):", "", "| machines | slots | expected cells s | speed-up vs 1 machine |", "|---|---|---|---|"]
    per_cell = [c["seconds"] + max(overhead_per_cell(on_ray, cores), 0) for c in on_ray["cells"]]
    base = makespan(per_cell, cores)
    for machines in (1, 2, 4, 8):
        span = makespan(per_cell, machines * cores)
        lines.append(f"| {machines} | {machines * cores} | {span:.1f} | {base / span:.2f}× |")
    lines += ["", f"With {len(per_cell)} cells the speed-up stops at {len(per_cell)} slots: the longest cell "
              f"({max(per_cell):.1f} s) bounds the makespan. A real search (more recipes × grid values, QAT on "
              "a larger model) has many more cells than slots, and scales with the machines until then.", end]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    root = Path(tempfile.mkdtemp(prefix="edgekit-sweep-bench-"))
    ray_temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    try:
        make_inputs(root)
        runs = {"--jobs 1": sweep(root, "jobs1", ["--jobs", "1"]), "local pool": sweep(root, "pool", [])}
        address = start_ray(ray_temp, cores)
        try:
            runs["ray"] = sweep(root, "ray", ["--ray", address])
            ray_overhead = empty_task_overhead(address)
        finally:
            subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True,
                           env=_ray_env())
        section = render(runs, ray_overhead, cores)
        write_section("sweep.py", section, args.out)
        print(section)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(ray_temp, ignore_errors=True)


if __name__ == "__main__":
    main()
