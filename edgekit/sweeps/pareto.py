"""Per device: which artifacts are worth having (the Pareto front), and which one to ship (the pick).

A point dominates another when it is at least as accurate and at least as fast (and, for
the front with size, at least as small), and strictly better in one. The pick is the fastest
point within the accuracy budget (the float model's top-1 minus --max-accuracy-drop
points) that the device can run; within 3% of its latency, the more accurate and then the
smaller file is taken instead.
"""

from __future__ import annotations

SAME_SPEED = 1.03  # latencies within 3% of each other: closer than host measurements repeat


def _latency(point: dict, device: str) -> float | None:
    return (point["devices"].get(device) or {}).get("latency_ms")


def _dominates(a: tuple, b: tuple) -> bool:
    return all(x <= y for x, y in zip(a, b)) and a != b


def front(points: list[dict], device: str, with_size: bool = False) -> list[str]:
    """Ids of the non-dominated points, fastest first. Objectives are minimised: latency,
    lost accuracy (-top1), and with_size the file's bytes."""
    scored = [(p["id"], (_latency(p, device), -p["top1"]) + ((p["size_bytes"],) if with_size else ()))
              for p in points if _latency(p, device) is not None and p["top1"] is not None]
    kept = [(pid, s) for pid, s in scored if not any(_dominates(other, s) for _, other in scored)]
    return [pid for pid, _ in sorted(kept, key=lambda item: item[1])]


def pick(points: list[dict], device: str, floor_top1: float) -> dict | None:
    """The fastest point at or above the accuracy floor, or None. Latencies within SAME_SPEED of
    the fastest are a tie (measurement noise must not choose): the more accurate, then the
    smaller file wins it."""
    eligible = [p for p in points if _latency(p, device) is not None and p["top1"] is not None
                and p["top1"] >= floor_top1 - 1e-9]
    if not eligible:
        return None
    fastest = min(_latency(p, device) for p in eligible)
    tied = [p for p in eligible if _latency(p, device) <= fastest * SAME_SPEED]
    return min(tied, key=lambda p: (-p["top1"], p["size_bytes"], _latency(p, device), p["id"]))


def analyse(points: list[dict], devices: list, reference_top1: float | None, max_drop: float) -> list[dict]:
    """One entry per device: its front, front with size, pick, and why there is none."""
    floor = None if reference_top1 is None else reference_top1 - max_drop / 100
    summaries = []
    for profile in devices:
        runnable = [p for p in points if _latency(p, profile.name) is not None]
        chosen = pick(points, profile.name, floor) if floor is not None else None
        summaries.append({
            "device": profile.name, "title": profile.title, "kind": profile.kind,
            "latency": "measured" if any((p["devices"].get(profile.name) or {}).get("measured") for p in runnable)
            else "estimated",
            "runnable": len(runnable), "front": front(points, profile.name),
            "front_with_size": front(points, profile.name, with_size=True),
            "pick": chosen["id"] if chosen else None,
            "why_no_pick": None if chosen else _why_no_pick(points, profile.name, runnable, floor),
            "pick_overlaps": _overlapping(points, profile.name, chosen, floor) if chosen else [],
        })
    return summaries


def _overlapping(points: list[dict], device: str, chosen: dict, floor: float | None) -> list[str]:
    """Eligible artifacts whose estimated band overlaps the pick's: the estimate cannot tell
    which is faster there (issue 25), so the pick says so."""
    band = (chosen["devices"].get(device) or {}).get("likely_ms")
    if not band:
        return []
    found = []
    for point in points:
        other = (point["devices"].get(device) or {}).get("likely_ms")
        eligible = floor is None or (point["top1"] is not None and point["top1"] >= floor - 1e-9)
        if point["id"] != chosen["id"] and other and eligible and other[0] <= band[1] and band[0] <= other[1]:
            found.append(point["id"])
    return found


def _why_no_pick(points: list[dict], device: str, runnable: list[dict], floor: float | None) -> str:
    if not points:
        return "no cell produced an artifact"
    if floor is None:
        return "no accuracy: the cells measured no top-1 (pass --val)"
    if not runnable:
        first = points[0]["devices"].get(device) or {} if points else {}
        why = first.get("incompatible") or first.get("error") or "not measured"
        return f"none of the {len(points)} artifacts runs there (e.g. {points[0]['id']}: {why})"
    best = max((p["top1"] for p in runnable if p["top1"] is not None), default=None)
    return (f"none within the accuracy budget: the best it runs has top-1 {100 * best:.2f}%, "
            f"the floor is {100 * floor:.2f}%") if best is not None else "no runnable artifact has an accuracy"
