"""`edgekit gate REPORT --baseline BASELINE`: fail a build when accuracy, latency or size regress.

Every artifact of the baseline is matched by `id` in the new report and checked:
accuracy drop in points, p50 latency increase in percent (only when both sides were measured
on the same device and CPU), size increase in percent, and an absolute accuracy floor.
A check that cannot be made is "skipped" with the reason, never silently passed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekit.errors import EdgekitError, GateFailure, InputError, OutputError

SCHEMA = "edgekit.reports.report/1"


class Thresholds(BaseModel):
    """The limits, from flags or a gate.yaml (same names); unknown keys are errors."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_accuracy_drop: float = Field(0.5, ge=0, le=100, description="top-1 points")
    max_latency_increase: float = Field(10.0, ge=0, description="percent of the baseline p50")
    max_size_increase: float = Field(5.0, ge=0, description="percent of the baseline size")
    min_accuracy: Optional[float] = Field(None, ge=0, le=100, description="top-1 floor in percent")
    allow_missing: bool = False


@dataclass
class Check:
    artifact: str
    check: str                                  # accuracy | min-accuracy | latency | size | presence
    verdict: Literal["pass", "fail", "skipped"]
    baseline: Optional[float] = None
    new: Optional[float] = None
    change: Optional[float] = None              # points (accuracy) or percent (latency, size)
    limit: Optional[float] = None
    note: str = ""
    noise: Optional[float] = None               # latency: the spread of the runs, in %
    method: Optional[str] = None                # latency: "recorded" or "remeasured"


def load_thresholds(path: Optional[Path], flags: dict) -> Thresholds:
    """gate.yaml values, overridden by the flags actually given (None = not given)."""
    from edgekit.support.untrusted import load_yaml

    data = {}
    if path is not None:
        if not Path(path).exists():
            raise InputError(f"--config {path}: no such file")
        data = load_yaml(Path(path), "gate config")
        if data is None:  # empty or only comments: a truncated file would otherwise gate on the defaults
            raise InputError(f"gate config {path} holds no thresholds; write them in it, or leave out --config "
                             "to gate on the defaults")
        if not isinstance(data, dict):
            raise InputError(f"gate config {path} must be a YAML mapping of thresholds")
    data.update({k: v for k, v in flags.items() if v is not None})
    try:
        return Thresholds.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        source = f"--{field.replace('_', '-')}" if field in flags and flags[field] is not None else f"gate config {path}: {field}"
        allowed = f" (allowed: {', '.join(Thresholds.model_fields)})" if error["type"] == "extra_forbidden" else ""
        raise InputError(f"{source}: {error['msg'].lower()}{allowed}") from None


def load_report(path: Path, role: str) -> dict:
    """A report read strictly (edgekit.reports.report_schema): anything the gate cannot trust is exit 2
    naming the field, never a check that passes by default."""
    from edgekit.reports.report_schema import ReportError, parse_strict_json, validate_report
    from edgekit.support.untrusted import load_json

    report = load_json(path, role, parse=parse_strict_json)
    schema = report.get("schema") if isinstance(report, dict) else None
    if not isinstance(schema, str) or not schema.startswith("edgekit.reports.report/"):
        raise InputError(f"{role} {path} is not an edgekit report.json (no \"schema\": \"{SCHEMA}\")")
    if schema != SCHEMA:
        raise InputError(f"{role} {path} has schema {schema!r}; this edgekit reads {SCHEMA!r} (upgrade edgekit)")
    try:
        validate_report(report)
    except ReportError as exc:
        raise InputError(f"{role} {path} breaks the report schema at {exc}") from None
    return report


def _top1(artifact: dict) -> Optional[float]:
    accuracy = artifact.get("accuracy") or {}
    return None if accuracy.get("top1") is None else 100.0 * accuracy["top1"]


def _p50(artifact: dict) -> Optional[float]:
    return (artifact.get("latency_ms") or {}).get("p50")


def _percent(base: float, new: float) -> float:
    return (new / base - 1.0) * 100.0  # base > 0: the schema refuses a zero size or p50


def accuracy_checks(aid: str, base: dict, new: dict, limits: Thresholds) -> list[Check]:
    checks = []
    b, n = _top1(base), _top1(new)
    if b is not None and n is None:  # fail closed: a report that drops its accuracy shows no drop
        checks.append(Check(aid, "accuracy", "fail", round(b, 4), None, None, limits.max_accuracy_drop,
                            "the baseline has an accuracy and the new report none: compress with --val"))
    elif b is None:
        note = "no accuracy in the baseline (compress it with --val)" + ("" if n is not None else " nor the new report")
        checks.append(Check(aid, "accuracy", "skipped", b, n, note=note))
    else:
        drop = b - n
        checks.append(Check(aid, "accuracy", "fail" if drop > limits.max_accuracy_drop else "pass", round(b, 4),
                            round(n, 4), round(-drop, 4), limits.max_accuracy_drop, "top-1 %, change in points"))
    if limits.min_accuracy is not None:
        if n is None:
            checks.append(Check(aid, "min-accuracy", "fail", None, None, None, limits.min_accuracy,
                                "no accuracy in the new report, so the floor cannot be shown to hold"))
        else:
            checks.append(Check(aid, "min-accuracy", "fail" if n < limits.min_accuracy else "pass", None,
                                round(n, 4), None, limits.min_accuracy, "top-1 % floor"))
    return checks


def latency_check(aid: str, base: dict, new: dict, base_host: dict, new_host: dict, limits: Thresholds,
                  files: tuple[Path, Path] | None = None) -> Check:
    b, n = _p50(base), _p50(new)
    if b is None or n is None:
        side = "baseline" if b is None else "new report"
        return Check(aid, "latency", "skipped", b, n, note=f"no latency in the {side}")
    if base.get("device") != new.get("device"):
        return Check(aid, "latency", "skipped", b, n, note=f"devices differ ({base.get('device')} vs {new.get('device')})")
    if files is not None:  # both measured here and now: which CPU recorded them no longer matters
        try:
            return _remeasured(aid, files, limits)
        except EdgekitError:  # no runtime for the format here (a light install): judge the recorded numbers
            pass
    if base.get("device") == "host" and (base_host.get("cpu"), base_host.get("arch")) != (new_host.get("cpu"),
                                                                                         new_host.get("arch")):
        return Check(aid, "latency", "skipped", b, n,
                     note=f"measured on different CPUs ({base_host.get('cpu')} vs {new_host.get('cpu')})")
    change = _percent(b, n)
    noise = _noise(base, new)
    limit = limits.max_latency_increase
    if change > limit and change <= limit + noise:
        return Check(aid, "latency", "skipped", b, n, round(change, 2), limit,
                     f"too noisy to judge: {change:+.1f}% is within the runs' uncertainty (±{noise:.0f}%); measure "
                     "both on a quiet machine, or keep both folders beside their reports so the gate measures "
                     "them side by side", noise=round(noise, 2), method="recorded")
    return Check(aid, "latency", "fail" if change > limit else "pass", b, n, round(change, 2), limit,
                 f"p50 ms, change in % (recorded, ±{noise:.1f}%)", noise=round(noise, 2), method="recorded")


NOISY_SPREAD = 50.0  # % : a p90 this far above the p50 means the machine was busy while it measured


def _noise(base: dict, new: dict) -> float:
    """The uncertainty of a recorded p50 change, in %: the 95% interval of the difference of two
    medians (robust σ from p90 − p50, n runs each), or, when either side's runs scatter past
    NOISY_SPREAD, that spread itself: a busy machine shifts the median, not just the tail."""
    intervals, spreads = [], []
    for artifact in (base, new):
        latency = artifact.get("latency_ms") or {}
        p50, p90 = latency.get("p50"), latency.get("p90")
        runs = (artifact.get("benchmark") or {}).get("runs")
        if not p50 or not isinstance(p90, (int, float)) or p90 != p90:
            continue
        spread = 100.0 * max(p90 - p50, 0.0) / p50
        n = runs if isinstance(runs, int) and not isinstance(runs, bool) and runs > 0 else 50
        spreads.append(spread)
        intervals.append(1.96 * 1.2533 * (spread / 1.2816) / n ** 0.5)
    noise = sum(i * i for i in intervals) ** 0.5
    busiest = max(spreads, default=0.0)
    return max(noise, busiest) if busiest > NOISY_SPREAD else noise


REMEASURE_ROUNDS = 5
REMEASURE = {"runs": 30, "min_time_s": 0.3, "warmup_runs": 3, "warmup_time_s": 0.1}


def _remeasured(aid: str, files: tuple[Path, Path], limits: Thresholds) -> Check:
    """Both files measured now, interleaved (ABAB…): a busy machine slows both alike. The change is
    the median of the rounds' p50 ratios; when the rounds scatter more than the limit, the machine
    is too noisy to judge and the check says so instead of failing."""
    from edgekit.measure.latency import BenchSettings, bench_local

    base_file, new_file = files
    timings = bench_local([base_file, new_file] * REMEASURE_ROUNDS, BenchSettings(**REMEASURE))
    ratios = sorted(n["p50"] / b["p50"] for b, n in zip(timings[0::2], timings[1::2]))
    change = 100.0 * (ratios[len(ratios) // 2] - 1.0)
    noise = 100.0 * (ratios[-2] - ratios[1]) / 2  # half the spread of the middle rounds
    b = float(np.median([t["p50"] for t in timings[0::2]]))
    n = float(np.median([t["p50"] for t in timings[1::2]]))
    limit = limits.max_latency_increase
    if change > limit and change - noise <= limit:
        return Check(aid, "latency", "skipped", round(b, 6), round(n, 6), round(change, 2), limit,
                     f"too noisy to judge: measured side by side {change:+.1f}% ±{noise:.0f}% over "
                     f"{REMEASURE_ROUNDS} rounds", noise=round(noise, 2), method="remeasured")
    return Check(aid, "latency", "fail" if change > limit else "pass", round(b, 6), round(n, 6), round(change, 2),
                 limit, f"p50 ms, both files measured now, interleaved ({REMEASURE_ROUNDS} rounds, ±{noise:.0f}%)",
                 noise=round(noise, 2), method="remeasured")


def artifact_files(report_path: Path, artifact: dict) -> Path | None:
    """An artifact's file beside its report, when it is there whole: a plain name (never a path that
    leaves the folder), a regular file, the size the report records."""
    name = artifact.get("path")
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        return None
    path = Path(report_path).parent / name
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size != artifact.get("size_bytes"):
            return None
    except OSError:
        return None
    return path


def size_check(aid: str, base: dict, new: dict, limits: Thresholds) -> Check:
    b, n = base.get("size_bytes"), new.get("size_bytes")
    if b is None or n is None:
        return Check(aid, "size", "skipped", b, n, note="no size_bytes on one side")
    change = _percent(b, n)
    return Check(aid, "size", "fail" if change > limits.max_size_increase else "pass", b, n, round(change, 2),
                 limits.max_size_increase, "bytes, change in %")


def compare(new_report: dict, baseline: dict, limits: Thresholds, paths: tuple[Path, Path] | None = None,
            remeasure: bool = True) -> list[Check]:
    """paths: (report, baseline) files, to find the artifacts beside them and measure them side by side."""
    new_by_id = {a["id"]: a for a in new_report["artifacts"]}
    missing = [a["id"] for a in baseline["artifacts"] if a["id"] not in new_by_id]
    if missing and not limits.allow_missing:
        raise InputError(f"the new report has no {', '.join(missing)} (in the baseline); export it again, or pass "
                         "--allow-missing if it was dropped on purpose")
    checks = []
    for base in baseline["artifacts"]:
        aid = base["id"]
        if aid not in new_by_id:
            checks.append(Check(aid, "presence", "skipped", note="missing from the new report (--allow-missing)"))
            continue
        new = new_by_id[aid]
        checks += accuracy_checks(aid, base, new, limits)
        files = _both_files(paths, base, new) if remeasure and paths else None
        checks.append(latency_check(aid, base, new, baseline.get("host") or {}, new_report.get("host") or {}, limits,
                                    files))
        checks.append(size_check(aid, base, new, limits))
    base_ids = {a["id"] for a in baseline["artifacts"]}
    for aid in new_by_id:
        if aid not in base_ids:
            checks.append(Check(aid, "presence", "skipped", note="new artifact, not in the baseline"))
    return checks


def _both_files(paths: tuple[Path, Path], base: dict, new: dict) -> tuple[Path, Path] | None:
    """Host measurements whose files are both beside their reports, and differ (a report gated
    against itself has nothing to measure side by side)."""
    if base.get("device") != "host" or new.get("device") != "host":
        return None
    report_path, baseline_path = paths
    found = artifact_files(baseline_path, base), artifact_files(report_path, new)
    if None in found or found[0].resolve() == found[1].resolve():
        return None
    return found


def run_gate(report_path: Path, baseline_path: Path, limits: Thresholds, junit: Optional[Path] = None,
             summary: Optional[Path] = None, remeasure: bool = True) -> dict:
    """Load, compare, write the JUnit/summary files asked for. Bad input raises before anything
    is written; a regression is reported in the files, then `raise_if_failed` makes it exit 1."""
    from edgekit.support.output_folders import check_writable_file, write_text_atomically

    for option, path in (("--junit", junit), ("--summary", summary)):
        if path is not None:
            check_writable_file(Path(path), option)
    new_report, baseline = load_report(report_path, "report"), load_report(baseline_path, "baseline")
    checks = compare(new_report, baseline, limits, (Path(report_path), Path(baseline_path)), remeasure)
    result = {"report": str(report_path), "baseline": str(baseline_path), "thresholds": limits.model_dump(),
              "checks": [asdict(c) for c in checks], "passed": not any(c.verdict == "fail" for c in checks)}
    if junit:
        write_text_atomically(Path(junit), junit_xml(checks), "--junit")
    if summary:
        _append(Path(summary), summary_markdown(result))
    return result


def _append(path: Path, text: str) -> None:
    try:
        with open(path, "a") as f:
            f.write(text)
    except OSError as exc:  # a disk that filled up since the start
        raise OutputError(f"--summary {path} could not be written ({exc.strerror or exc})") from None


def raise_if_failed(result: dict) -> None:
    failed = [c for c in result["checks"] if c["verdict"] == "fail"]
    if failed:
        names = ", ".join(f"{c['artifact']} {c['check']}" for c in failed)
        raise GateFailure(f"gate failed: {len(failed)} of {len(result['checks'])} checks regressed ({names})")


def junit_xml(checks: list[Check]) -> str:
    from xml.etree import ElementTree as ET

    failures = sum(c.verdict == "fail" for c in checks)
    skipped = sum(c.verdict == "skipped" for c in checks)
    suite = ET.Element("testsuite", name="edgekit gate", tests=str(len(checks)), failures=str(failures),
                       errors="0", skipped=str(skipped))
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"edgekit.gate.{c.artifact}", name=c.check)
        if c.verdict == "fail":
            failure = ET.SubElement(case, "failure", message=describe(c))
            failure.text = describe(c)
        elif c.verdict == "skipped":
            ET.SubElement(case, "skipped", message=c.note)
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def describe(c: Check) -> str:
    """One short line for the table and the JUnit failure message."""
    if c.verdict == "skipped":
        return c.note
    if c.check == "min-accuracy":
        return f"top-1 {c.new:.2f}% (floor {c.limit:g}%)" if c.new is not None else c.note
    if c.check == "accuracy":
        return f"top-1 {c.baseline:.2f}% -> {c.new:.2f}% ({c.change:+.2f} pts; limit -{c.limit:g})"
    unit = "ms" if c.check == "latency" else "B"
    return f"{_cell(c.baseline)} -> {_cell(c.new)} {unit} ({c.change:+.1f}%; limit +{c.limit:g}%)"


def summary_markdown(result: dict) -> str:
    checks = result["checks"]
    failed = sum(c["verdict"] == "fail" for c in checks)
    head = "passed" if result["passed"] else f"FAILED ({failed} regression{'s' if failed != 1 else ''})"
    lines = [f"### edgekit gate: {head}", "",
             f"`{result['report']}` against baseline `{result['baseline']}`", "",
             "| artifact | check | baseline | new | change | limit | verdict |", "|---|---|---|---|---|---|---|"]
    for c in checks:
        cells = [c["artifact"], c["check"], *(_cell(c[k]) for k in ("baseline", "new", "change", "limit")),
                 f"**{c['verdict']}**" if c["verdict"] == "fail" else c["verdict"] + (f" ({c['note']})" if
                                                                                     c["verdict"] == "skipped" else "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n"


def _cell(value) -> str:
    return "—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

