"""What each command prints on the terminal: Rich tables for compress, inspect, eval, bench,
diagnose, devices and gate (stdout; see cli.py)."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.table import Table
from rich.text import Text

from edgekit.reports.text import count, headers, pct, rows, size, stage_lines

def render_diagnosis(result: dict, top: int = 10) -> Table:
    data = result["data"]
    table = Table(title=f"edgekit diagnose {result['model']} on {data['path']} ({data['samples']} samples)",
                  caption="worst first by SQNR lost at the layer; SQNR per channel, against the Keras float model",
                  box=box.SIMPLE, collapse_padding=True, pad_edge=False)
    for h in ("artifact", "layer", "kind", "SQNR dB", "lost dB", "rel RMSE", "float range", "outlier ×"):
        table.add_column(h, justify="left" if h in ("artifact", "layer", "kind", "float range") else "right",
                         no_wrap=True)
    for a in result["artifacts"]:
        for layer in a["layers"][:top]:
            low, high = layer["float_range"]
            ratio = layer["outlier_ratio"]
            table.add_row(a["artifact"], layer["layer"], layer["kind"], f"{layer['sqnr_db']:.1f}",
                          f"{layer['added_db']:.1f}", f"{layer['relative_rmse']:.3g}", f"{low:.3g} … {high:.3g}",
                          f"{ratio:g}" if ratio else "—")
        if a.get("not_compared"):
            table.add_row(a["artifact"], f"not compared: {', '.join(a['not_compared'])}", "", "", "", "", "", "")
    return table


def render_table(report: dict) -> Table:
    """The terminal table: like report.md without the file column (the id names it)."""
    ref = (report["reference"] or {}).get("accuracy")
    caption = f"Keras reference top-1 {pct(ref['top1'])}" if ref else "no validation labels: accuracy not measured"
    caption = "\n".join([*stage_lines(report), caption])
    # box.SIMPLE: no vertical rules, so the table fits 80 columns with the gzip column too
    table = Table(title=f"edgekit: {report['source']['path']}", caption=caption, box=box.SIMPLE,
                  collapse_padding=True, pad_edge=False)
    for h in headers(report):
        if h != "file":
            table.add_column(h, justify="left" if h in ("artifact", "check") else "right", no_wrap=True)
    for row in rows(report):
        table.add_row(*row[:1], *row[2:])
    return table


def _listing(items) -> str:
    from edgekit.intake.safety import group_layers

    if items is None:
        return "n/a"
    return group_layers(items) if items else "none"


def describe_format(facts: dict) -> str:
    """What wrote the file, as far as the file says: a SavedModel has no Keras version, and a
    Keras 2 version number alone does not tell tf_keras from standalone Keras 2."""
    if facts["format"] == "savedmodel":
        return "TensorFlow SavedModel"
    suffix = {"h5": ".h5 (HDF5)", "keras": ".keras (zip)"}.get(facts["format"], facts["format"])
    version = facts.get("keras_version") or ""
    if facts["keras"] == "keras3":
        return f"{suffix} · written by Keras {version or '3'}"
    return f"{suffix} · written by Keras {version or '2'} (tf_keras or standalone Keras 2), read with tf_keras"


def render_inspection(facts: dict) -> Table:
    """`edgekit inspect` as a two-column table."""
    table = Table(title=f"edgekit inspect: {facts['path']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    bridge = facts["bridge"]
    if bridge is None:
        bridged = "not needed" if facts["keras"] == "tf_keras" else "n/a"
    else:
        bridged = f"rebuilt as tf_keras (max |Δ| {bridge['max_abs_diff']:.1e})" if bridge["bridged"] else "not possible"
    macs = "n/a (no Keras layers)" if facts["macs"] is None else count(facts["macs"])
    rows = [
        ("format", describe_format(facts)),
        ("file size", size(facts["size_bytes"])),
        ("input", str(tuple(facts["input_shape"]))),
        ("output", str(tuple(facts["output_shape"]))),
        ("classes", str(facts["num_classes"])),
        ("parameters", f"{facts['params']:,}"),
        ("MACs / inference", macs),
        ("tf_keras bridge", bridged),
        ("bridge cannot translate", _listing(facts["bridge_untranslatable"])),
        ("pruning / QAT", "available" if facts["trainable_path"] else "not available (needs a tf_keras model)"),
        ("QAT cannot quantize", _listing(facts["qat_unsupported"])),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def render_evaluation(result: dict) -> Table:
    data = result["data"]
    agree = "; ".join(f"{k} {pct(v)}" for k, v in result["agreement"].items())
    table = Table(title=f"edgekit eval on {data['path']} ({data['samples']} samples)",
                  caption=f"top-1 agreement: {agree}" if agree else None, box=box.SIMPLE, collapse_padding=True,
                  pad_edge=False)
    for h in ("artifact", "format", "input", "top-1", "top-5"):
        table.add_column(h, justify="right" if h.startswith("top") else "left", no_wrap=True)
    for a in result["artifacts"]:
        table.add_row(a["name"], a["format"], a["input"]["dtype"], pct(a["accuracy"]["top1"]),
                      pct(a["accuracy"]["top5"]))
    return table


def render_bench(results: list[dict]) -> Table:
    host = results[0]["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in host["runtimes"].items() if v)
    where = f"measured on {results[0]['remote']} ({host['hostname']})" if results[0].get("remote") else "measured here"
    if results[0].get("device") not in (None, "host", results[0].get("remote")):
        where += f" as device {results[0]['device']}"
    table = Table(title=f"edgekit bench on {host['cpu']} ({host['arch']}; {' '.join(host['isa']) or 'no SIMD flags'})",
                  caption=f"{where}, batch 1 · {versions}", box=box.SIMPLE, collapse_padding=True,
                  pad_edge=False)
    # mean, std, min, max and the first inference are in --json; the table keeps to 80 columns
    for h in ("artifact", "runs", "init ms", "p50 ms", "p90 ms", "p99 ms", "per s", "RSS MB"):
        table.add_column(h, justify="left" if h == "artifact" else "right", no_wrap=True)
    for r in results:
        table.add_row(Path(r["path"]).name, str(r["runs"]), f"{r['init_ms']:.3g}", f"{r['p50']:.3g}",
                      f"{r['p90']:.3g}", f"{r['p99']:.3g}", f"{r['throughput_per_s']:.0f}", f"{r['peak_rss_mb']:.0f}")
    return table


def render_estimates(results: list[dict]) -> Table:
    """Estimates get their own table, titled as such: never beside measured numbers. The band is
    the per-layer model's leave-one-model-out error on that device (edgekit.measure.layer_estimate)."""
    first = results[0]
    bases = list(dict.fromkeys(f"{Path(r['path']).name}: {r['basis']}" if len(results) > 1 else r["basis"]
                               for r in results))
    method = first["method"] + (f"\nefficiency {first['efficiency']:.3g}" if "efficiency" in first else "")
    table = Table(title=f"ESTIMATED latency on {first['device']} (not measured)",
                  caption="\n".join([method, *bases]), box=box.SIMPLE, collapse_padding=True, pad_edge=False)
    for h in ("artifact", "precision", "computes in", "MMACs", "estimate ms", "likely ms"):
        table.add_column(h, justify="left" if h == "artifact" else "right", no_wrap=h != "artifact")
    for r in results:
        likely = r.get("likely_ms")
        table.add_row(Path(r["path"]).name, r["precision"], f"{r.get('runtime', '')} {r['computes_in']}".strip(),
                      f"{r['macs'] / 1e6:.3g}", f"{r['latency_ms']['estimate']:.3g}",
                      f"{likely[0]:.3g}–{likely[1]:.3g}" if likely else f"{r.get('bound', '')}-bound roofline")
    notes = [n for n in (first.get("toolchain"), first.get("gpu_runtime_here") and
                         f"GPU runtime on this machine: {first['gpu_runtime_here']}") if n]
    if notes:
        table.caption += "\n" + "\n".join(notes)
    return table


def render_devices(profiles: list[dict]) -> Table:
    table = Table(title="Device profiles (edgekit devices NAME for one in full)", box=box.SIMPLE,
                  collapse_padding=True, pad_edge=False)
    for h in ("name", "kind", "runtimes", "estimates"):  # precisions and the rest: `edgekit devices NAME`
        table.add_column(h, no_wrap=True)
    for p in profiles:
        ref, fitted = p.get("reference"), p.get("latency_model")
        checked = fitted and fitted["leave_one_model_out"]
        basis = ("measured live" if p["name"] == "host" else
                 f"per-layer model on {fitted['published_latencies']} published latencies, "
                 f"{checked['within_30pct']:.0%} of {checked['rows']} unseen within ±30%" if checked and checked["rows"] else
                 f"per-layer model on {fitted['published_latencies']} published latencies (a guess: too few to check)"
                 if fitted else
                 f"roofline calibrated ({ref['precision']} {ref['latency_ms']:g} ms)" if ref else "roofline, uncalibrated")
        table.add_row(p["name"], p["kind"], ",".join(p["runtimes"]), basis)
    return table


def render_device(profile: dict) -> Table:
    table = Table(title=f"{profile['name']}: {profile['title']}", box=box.SIMPLE, show_header=False,
                  collapse_padding=True, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    for key, value in profile.items():
        if key in ("name", "title"):
            continue
        if key == "calibration":
            value = "\n".join([f"{value['measured_on']} ({value['date']}), {value['suite']}",
                               *map(_calibrated_setting, value["settings"])])
        elif isinstance(value, dict):
            value = "\n".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        table.add_row(key, str(value).strip())
    return table


def _calibrated_setting(setting: dict) -> str:
    low, high = setting["band"]
    return (f"{setting['runtime']} {setting['precision']}, {setting.get('threads') or 'default'} thread(s): "
            f"{setting['points']} suite files; its networks {setting['within_20pct']:.0%} within ±20% when left out of the fit, "
            f"likely {low:.2f}–{high:.2f}× the estimate")


def render_calibration(profile: dict, path) -> Table:
    """What `edgekit devices calibrate` wrote: one row per runtime and precision."""
    calibration = profile["calibration"]
    table = Table(title=f"Wrote {path}: {profile['name']}, calibrated on {calibration['measured_on']}",
                  caption=f"{calibration['suite']}. Use it with: edgekit bench FILE --device {path}",
                  box=box.SIMPLE, collapse_padding=True, pad_edge=False)
    for h in ("runtime", "precision", "threads", "files", "networks within ±20% (left out)", "likely × estimate"):
        table.add_column(h, no_wrap=True, justify="left" if h in ("runtime", "precision") else "right")
    for s in calibration["settings"]:
        table.add_row(s["runtime"], s["precision"], str(s.get("threads") or "default"), str(s["points"]),
                      f"{s['within_20pct']:.0%}", f"{s['band'][0]:.2f}–{s['band'][1]:.2f}")
    return table


def render_gate(result: dict) -> Table:
    from edgekit.reports.gating import Check, describe

    checks = result["checks"]
    failed = sum(c["verdict"] == "fail" for c in checks)
    skipped = sum(c["verdict"] == "skipped" for c in checks)
    table = Table(title=f"edgekit gate: {'PASSED' if result['passed'] else 'FAILED'}",
                  caption=f"{len(checks)} checks: {failed} failed, {skipped} skipped · baseline {result['baseline']}",
                  box=box.SIMPLE, collapse_padding=True, pad_edge=False)
    for h in ("artifact", "check", "verdict", "detail"):
        table.add_column(h, no_wrap=h != "detail")
    style = {"pass": "green", "fail": "bold red", "skipped": "yellow"}
    for c in checks:
        table.add_row(c["artifact"], c["check"], Text(c["verdict"], style=style[c["verdict"]]), describe(Check(**c)))
    return table
