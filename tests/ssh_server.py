"""A real OpenSSH server on 127.0.0.1 for the --remote tests (bench, devices calibrate, compress), with host
and user keys made for it; .ci/run installs Debian's openssh-server."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not SSHD.exists() or not shutil.which("ssh-keygen"):
        pytest.skip("openssh-server is not installed here (.ci/run installs it)")
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    (root / "authorized_keys").write_text((root / "user_key.pub").read_text())
    port = free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile {root / 'sshd.pid'}\n"
        "Subsystem sftp internal-sftp\n")  # scp speaks SFTP, as on any stock server
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(root / "sshd_config")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        server.kill()
        pytest.fail(f"sshd did not start: {server.stderr.read().decode()[-500:]}")
    options = [f"Port={port}", f"IdentityFile={root / 'user_key'}", "StrictHostKeyChecking=no",
               "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"]
    yield {"destination": f"{getpass.getuser()}@127.0.0.1", "options": options}
    server.terminate()
    server.wait(timeout=10)


def ssh_args(sshd) -> list[str]:
    """The server's ssh options as the CLI takes them: --ssh-option OPTION, repeated."""
    return [arg for option in sshd["options"] for arg in ("--ssh-option", option)]
