"""Fit the per-layer-kind latency model (edgekit.measure.latency_fit) on the published latencies
and print how wrong it is on architectures it never saw: leave-one-model-out, per device.

    python benchmarks/device_fit.py            # needs devices/data/network_work.json
    python benchmarks/device_fit.py --write    # and rewrites devices/latency_model.json (what bench uses)
    python benchmarks/published_architectures.py   # rebuilds that file (TensorFlow, ~2 min)

Rows left out of the fit, with the reason printed: throughput figures (1000 / FPS is not a
latency), the Coral page's CPU-only reference rows (host not stated), and architectures with no
builder in benchmarks/published_architectures.py.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekit.measure.latency_fit import SHAPE, error_summary, fit, leave_one_model_out, to_document  # noqa: E402
from edgekit.measure.published import fitting_samples, read_published  # noqa: E402

DATA = ROOT / "devices" / "data"
OUT = ROOT / "devices" / "latency_model.json"

def report(pairs) -> str:
    by_device = defaultdict(list)
    for sample, prediction in pairs:
        by_device[sample.device].append((sample, prediction))
    lines = ["| device | rows | predicted | median abs error | within ±30% | median abs log2 | worst |",
             "|---|---|---|---|---|---|---|"]
    for device in sorted(by_device) + ["all"]:
        chosen = pairs if device == "all" else by_device[device]
        e = error_summary(chosen)
        if not e["rows"]:
            lines.append(f"| {device} | {len(chosen)} | 0 | – | – | – | – |")
            continue
        lines.append(f"| {device} | {len(chosen)} | {e['rows']} | {e['median_abs_error']:.2f} | "
                     f"{e['within_30pct']:.0%} | {e['median_abs_log2']:.2f} | {e['worst_ratio']:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    networks = json.loads((DATA / "network_work.json").read_text())["networks"]
    rows = read_published(DATA / "published_latencies.md")
    fitted, left_out = fitting_samples(rows, networks)
    print(f"{len(rows)} published rows; fitted on {len(fitted)}; left out: "
          + "; ".join(f"{n} {why}" for why, n in sorted(left_out.items())))
    model = fit(fitted)
    print("\nIn-sample (every row in the fit):\n")
    print(report([(s, model.predict(s)) for s in fitted]))
    print("\nLeave-one-model-out (each architecture predicted by a fit without it):\n")
    held_out = leave_one_model_out(fitted)
    print(report(held_out))
    print("\nCost relative to a matrix-multiply MAC (conv, pointwise, fully connected), per runtime family:")
    for family, shape in sorted(model.shapes.items()):
        print(f"  {family:10s} " + "  ".join(f"{name} {value:.3g}" for name, value in zip(SHAPE, shape)))
    if "--write" in sys.argv:
        about = {"about": "edgekit's per-layer latency model, fitted by benchmarks/device_fit.py",
                 "fitted_on": f"devices/data/published_latencies.md: {len(fitted)} of {len(rows)} rows",
                 "left_out": left_out}
        OUT.write_text(json.dumps(to_document(model, held_out, about), indent=1) + "\n")
        print(f"\nwrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
