"""`edgekit bench --remote user@host`: the same harness, on another machine, over SSH.

The artifacts are copied with the system's scp into a temporary folder there, the child
harness (`python -m edgekit.latency`, the name every install answers to) runs with the remote Python, and its JSON comes back.
The results carry the remote machine's own description. The remote needs only
`pip install "edgekit[tflite]"` (or `[onnx]`, `[openvino]`) and key-based SSH.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import asdict
from pathlib import Path

from edgekit.measure.latency import BenchSettings
from edgekit.support.children import run_child
from edgekit.errors import InputError, regular_file

CONNECT_TIMEOUT_S = 10
SSH_UNREACHABLE = 255  # ssh's own exit status for connection and authentication failures


# user@host[:port]: a user and host that cannot be read as an option (no leading "-"), a
# hostname, IPv4 address or [IPv6] address, and a port number.
DESTINATION = re.compile(r"(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9._-]*)@)?"
                         r"(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")


def parse_destination(text: str) -> tuple[str, int | None]:
    """--remote USER@HOST[:PORT] → ("user@host", port); anything else is refused (exit 2),
    so a value like "-oProxyCommand=…" can never reach ssh as an option."""
    match = DESTINATION.fullmatch(text)
    port = int(match["port"]) if match and match["port"] else None
    if not match or (port is not None and not 0 < port < 65536):
        raise InputError(f"--remote {text!r}: expected USER@HOST or USER@HOST:PORT (a host name or address)")
    host = match["host"].strip("[]")
    return (f"{match['user']}@{host}" if match["user"] else host), port


def ssh_base(options: list[str]) -> list[str]:
    """Never prompt (BatchMode), give up connecting after CONNECT_TIMEOUT_S."""
    extra = [item for option in options for item in ("-o", option)]
    return ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", *extra]


def _try_command(target: str, port: int | None, options: list[str]) -> str:
    """The ssh command a user can paste to try the connection: with their options and port."""
    parts = ["ssh", *[item for option in options for item in ("-o", option)], *(["-p", str(port)] if port else []),
             target]
    return " ".join(shlex.quote(p) for p in parts)


def _run(command: list[str], destination: str, what: str, timeout_s: float, try_it: str = "") -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise InputError(f"{destination}: {what} did not finish within {timeout_s:g} s over SSH") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1][:200]
        if done.returncode == SSH_UNREACHABLE:
            raise InputError(f"cannot reach {destination} over SSH ({reason}); check the host and user, and that "
                             f"`{try_it or 'ssh ' + destination}` works without a password")
        raise InputError(f"{destination}: {what} failed ({reason})")
    return done.stdout


def remote_shell(destination: str, ssh_options: list[str], command: str, what: str, timeout_s: float = 120) -> str:
    """One shell command on USER@HOST[:PORT]; its stdout. Unreachable or failing: InputError (exit 2)."""
    target, port = parse_destination(destination)
    ssh = ["ssh", *ssh_base(ssh_options), *(["-p", str(port)] if port else []), "--", target]
    return _run([*ssh, command], destination, what, timeout_s, try_it=_try_command(target, port, ssh_options))


def bench_remote(paths: list[Path], settings: BenchSettings, destination: str, remote_python: str = "python3",
                 ssh_options: list[str] | None = None) -> list[dict]:
    settings.check()
    for path in paths:
        regular_file(path, "artifact")
    target, port = parse_destination(destination)
    base = ssh_base(ssh_options or [])
    ssh = ["ssh", *base, *(["-p", str(port)] if port else []), "--", target]  # "--": target is never an option
    scp = ["scp", "-q", *base, *(["-P", str(port)] if port else []), "--"]
    setup = settings.timeout_s
    python = shlex.quote(remote_python)
    probe = f"{python} -I -c 'import edgekit.latency' && mktemp -d /tmp/edgekit-bench.XXXXXX"
    try:
        folder = _run([*ssh, probe], destination, "preparing the benchmark", setup,
                      try_it=_try_command(target, port, ssh_options or [])).strip()
    except InputError as exc:
        if "cannot reach" in str(exc):
            raise
        raise InputError(f"{destination}: edgekit is not importable by {remote_python} there; install it with "
                         f"pip install \"edgekit[tflite]\" (or [onnx], [openvino]), or pass --remote-python") from None
    try:
        # a file measured in several rounds (ABAB) travels once
        _run([*scp, *[str(p) for p in _with_companions(list(dict.fromkeys(paths)))], f"{_scp_host(target)}:{folder}/"],
             destination, "copying the artifacts", setup)
        remote_paths = [f"{folder}/{Path(p).name}" for p in paths]
        payload = json.dumps({"paths": remote_paths, **asdict(settings)})
        command = [*ssh, f"{python} -I -m edgekit.latency {shlex.quote(payload)}"]
        results = run_child(command, settings.timeout_s * len(paths) + CONNECT_TIMEOUT_S,
                            f"{destination}: {', '.join(Path(p).name for p in paths)}")["results"]
    finally:
        subprocess.run([*ssh, f"rm -rf {shlex.quote(folder)}"], capture_output=True, timeout=60)
    for local, result in zip(paths, results):
        result["path"], result["remote"] = str(local), destination
    return results


def _scp_host(destination: str) -> str:
    """scp needs an IPv6 address in brackets before the ":folder" part."""
    user, _, host = destination.rpartition("@")
    host = f"[{host}]" if ":" in host else host
    return f"{user}@{host}" if user else host


def _with_companions(paths: list[Path]) -> list[Path]:
    """An OpenVINO .xml needs its .bin beside it."""
    files = []
    for path in map(Path, paths):
        files.append(path)
        if path.suffix == ".xml" and path.with_suffix(".bin").is_file():
            files.append(path.with_suffix(".bin"))
    return files
