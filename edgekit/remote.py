"""`edgekit bench --remote user@host`: the same harness, on another machine, over SSH.

The artifacts are copied with the system's scp into a temporary folder there, the child
harness (`python -m edgekit.bench`) runs with the remote Python, and its JSON comes back.
The results carry the remote machine's own description. The remote needs only
`pip install "edgekit[tflite]"` (or `[onnx]`, `[openvino]`) and key-based SSH.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import asdict
from pathlib import Path

from edgekit.bench import BenchSettings, run_child
from edgekit.errors import InputError

CONNECT_TIMEOUT_S = 10
SSH_UNREACHABLE = 255  # ssh's own exit status for connection and authentication failures


def ssh_base(options: list[str]) -> list[str]:
    """Never prompt (BatchMode), give up connecting after CONNECT_TIMEOUT_S."""
    extra = [item for option in options for item in ("-o", option)]
    return ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", *extra]


def _run(command: list[str], destination: str, what: str, timeout_s: float) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise InputError(f"{destination}: {what} did not finish within {timeout_s:g} s over SSH") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1][:200]
        if done.returncode == SSH_UNREACHABLE:
            raise InputError(f"cannot reach {destination} over SSH ({reason}); check the host and user, and that "
                             f"`ssh {destination}` works without a password")
        raise InputError(f"{destination}: {what} failed ({reason})")
    return done.stdout


def bench_remote(paths: list[Path], settings: BenchSettings, destination: str, remote_python: str = "python3",
                 ssh_options: list[str] | None = None) -> list[dict]:
    settings.check()
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"artifact {path} does not exist; check the path")
    base = ssh_base(ssh_options or [])
    setup = settings.timeout_s
    python = shlex.quote(remote_python)
    probe = f"{python} -c 'import edgekit.bench' && mktemp -d /tmp/edgekit-bench.XXXXXX"
    try:
        folder = _run(["ssh", *base, destination, probe], destination, "preparing the benchmark", setup).strip()
    except InputError as exc:
        if "cannot reach" in str(exc):
            raise
        raise InputError(f"{destination}: edgekit is not importable by {remote_python} there; install it with "
                         f"pip install \"edgekit[tflite]\" (or [onnx], [openvino]), or pass --remote-python") from None
    try:
        _run(["scp", "-q", *base, *[str(p) for p in _with_companions(paths)], f"{destination}:{folder}/"],
             destination, "copying the artifacts", setup)
        remote_paths = [f"{folder}/{Path(p).name}" for p in paths]
        payload = json.dumps({"paths": remote_paths, **asdict(settings)})
        command = ["ssh", *base, destination, f"{python} -m edgekit.bench {shlex.quote(payload)}"]
        results = run_child(command, settings.timeout_s * len(paths) + CONNECT_TIMEOUT_S,
                            f"{destination}: {', '.join(Path(p).name for p in paths)}")["results"]
    finally:
        subprocess.run(["ssh", *base, destination, f"rm -rf {shlex.quote(folder)}"], capture_output=True, timeout=60)
    for local, result in zip(paths, results):
        result["path"], result["remote"] = str(local), destination
    return results


def _with_companions(paths: list[Path]) -> list[Path]:
    """An OpenVINO .xml needs its .bin beside it."""
    files = []
    for path in map(Path, paths):
        files.append(path)
        if path.suffix == ".xml" and path.with_suffix(".bin").is_file():
            files.append(path.with_suffix(".bin"))
    return files
