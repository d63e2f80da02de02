"""The real OpenSSH server of the --remote tests (tests/ssh_server.py): a latency target measured on it."""

from tests.ssh_server import sshd  # noqa: F401 - a fixture
