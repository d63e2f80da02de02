"""`edgekit bench --remote` against a real OpenSSH server this test starts on 127.0.0.1
(tests/ssh_server.py: sshd), with host and user keys it makes. .ci/run installs Debian's
openssh-server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import refusal_line, snapshot
from tests.ssh_server import free_port, ssh_args

@pytest.fixture(scope="module")
def artifacts(digits, tmp_path_factory):
    from typer.testing import CliRunner

    from edgekit.cli import app

    out = tmp_path_factory.mktemp("remote") / "out"
    result = CliRunner().invoke(app, ["compress", str(digits["model"]), "--int8", "--data", str(digits["calib"]),
                                      "--formats", "tflite,openvino", "-o", str(out), "-q", "--no-bench"])
    assert result.exit_code == 0, result.output
    return out


def test_bench_over_ssh(cli, sshd, artifacts):
    files = [artifacts / "digits.int8.tflite", artifacts / "digits.int8.xml"]  # the .xml travels with its .bin
    result = cli("bench", *files, "--remote", sshd["destination"], "--remote-python", sys.executable,
                 *ssh_args(sshd), "--runs", "20", "--min-time", "0.2", "--device", "rpi4", "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert all(r["device"] == "rpi4" and r["threads"] == 4 for r in records)  # threads from the profile
    assert [r["path"] for r in records] == [str(f) for f in files]
    for r in records:
        assert r["remote"] == sshd["destination"] and r["measured"] is True
        assert r["runs"] >= 20 and 0 < r["p50"] <= r["p99"]
        assert r["machine"]["hostname"] == socket.gethostname()  # described by the remote itself
    table = cli("bench", files[0], "--remote", sshd["destination"], "--remote-python", sys.executable,
                *ssh_args(sshd), "--runs", "5", "--min-time", "0").stdout
    assert f"measured on {sshd['destination']}" in table
    # Nothing is left behind on the remote.
    leftovers = subprocess.run(["bash", "-c", "ls -d /tmp/edgekit-bench.* 2>/dev/null || true"],
                               capture_output=True, text=True).stdout.split()
    assert leftovers == []


def test_unreachable_remote_fails_fast_with_a_message(cli, artifacts, tmp_path):
    closed = free_port()
    before = snapshot(tmp_path)
    start = time.perf_counter()
    result = cli("bench", artifacts / "digits.int8.tflite", "--remote", "nobody@127.0.0.1",
                 "--ssh-option", f"Port={closed}")
    assert result.exit_code == 2
    assert time.perf_counter() - start < 20
    (line,) = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert "cannot reach nobody@127.0.0.1 over SSH" in line and "without a password" in line
    assert f"`ssh -o Port={closed} nobody@127.0.0.1` works" in line  # the hint keeps the user's options
    assert snapshot(tmp_path) == before


def test_remote_without_edgekit_is_named(cli, sshd, artifacts):
    result = cli("bench", artifacts / "digits.int8.tflite", "--remote", sshd["destination"],
                 "--remote-python", "/usr/bin/python3", *ssh_args(sshd))
    assert result.exit_code == 2
    assert "edgekit is not importable by /usr/bin/python3" in result.stderr and "pip install" in result.stderr


@pytest.mark.parametrize("value", ["-oProxyCommand=touch /tmp/pwned", "user@-oProxyCommand=x", "user@host:99999",
                                   "user@host;rm -rf /", "user name@host", "@host", "user@", ""])
def test_remote_values_that_are_not_user_at_host_are_refused(value, cli, artifacts):
    result = cli("bench", artifacts / "digits.int8.tflite", f"--remote={value}")
    refusal_line(result, ["--remote", "USER@HOST"])


def test_remote_destination_parsing():
    from edgekit.measure.remote import _scp_host, parse_destination

    assert parse_destination("pi@raspberrypi.local") == ("pi@raspberrypi.local", None)
    assert parse_destination("pi@10.0.0.7:2222") == ("pi@10.0.0.7", 2222)
    assert parse_destination("jetson") == ("jetson", None)
    assert parse_destination("root@[fe80::1]:22") == ("root@fe80::1", 22)
    assert _scp_host("root@fe80::1") == "root@[fe80::1]"


def test_sweep_measures_a_remote_device_over_ssh(cli, sshd, digits, tmp_path):
    """`sweep --remote rpi4=USER@HOST`: that device's latency is measured there, not estimated;
    the files it cannot run (OpenVINO: not a Pi runtime) are marked, not sent."""
    out = tmp_path / "sweep"
    result = cli("sweep", digits["model"], "--data", digits["calib"], "--val", digits["val"], "--recipes", "int8",
                 "--formats", "tflite,openvino", "--devices", "host,rpi4", "--remote", f"rpi4={sshd['destination']}",
                 "--remote-python", sys.executable, *ssh_args(sshd), "--runs", "5", "--min-time", "0.05", "-o", out)
    assert result.exit_code == 0, result.output
    sweep = json.loads((out / "sweep.json").read_text())
    rpi4 = {p["artifact"]: p["devices"]["rpi4"] for p in sweep["points"]}
    assert rpi4["tflite-int8"]["measured"] is True and rpi4["tflite-int8"]["remote"] == sshd["destination"]
    assert rpi4["tflite-int8"]["latency_ms"] > 0 and "estimated" not in rpi4["tflite-int8"]
    assert "openvino files do not run there" in rpi4["openvino-int8"]["incompatible"]
    device = next(d for d in sweep["devices"] if d["device"] == "rpi4")
    assert device["latency"] == "measured" and device["pick"].split(" · ")[1] in ("tflite-int8", "tflite-fp32")


def test_api_bench_over_ssh_is_the_cli_s(sshd, artifacts):
    import edgekit

    timing = edgekit.bench(artifacts / "digits.int8.tflite", remote=sshd["destination"], device="rpi4",
                           remote_python=sys.executable, ssh_options=sshd["options"], runs=5, min_time=0.0)
    (record,) = timing.results
    assert not timing.estimated and record["remote"] == sshd["destination"] and record["device"] == "rpi4"
    assert record["threads"] == 4 and record["measured"] is True
