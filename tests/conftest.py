import os
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# The machines that run the suite are shared and noisy, and the suite runs on several workers: hypothesis's timing
# checks (a per-example deadline, "too slow" data generation) measure the machine, not the code. Example counts and
# everything hypothesis checks about the data itself stay as each test sets them.
settings.register_profile("shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shared-machine")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ------------------------------------------------------------------------------------------------ redis-server


class RedisServer:
    """A real ``redis-server`` of the test's own: a port from the OS, its files in a tmp dir, no persistence.
    ``kill()`` stops it (SIGKILL), ``start()`` brings it back on the same port; ``url`` is ``redis://127.0.0.1:PORT/0``.
    A missing ``redis-server`` fails the test (scripts/setup installs it), never skips it."""

    def __init__(self, directory: str) -> None:
        import shutil

        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (scripts/setup installs it: apt-get install -y redis-server)"
        self.binary = binary
        self.directory = directory
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for _ in range(20):
            port = self.port  # a restart keeps the port the clients know
            if not port:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
            argv = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", self.directory]
            argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
            argv += ["--logfile", os.path.join(self.directory, "redis.log")]
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
                        c.sendall(b"PING\r\n")
                        if c.recv(16).startswith(b"+PONG"):
                            self.port, self.proc = port, proc
                            return
                except OSError:
                    time.sleep(0.05)
            proc.kill()
            proc.wait()
            if self.port:
                time.sleep(0.2)  # the same port, still held by the killed server's socket: try again
        raise AssertionError(f"redis-server did not start; see {self.directory}/redis.log")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this test's own (see :class:`RedisServer`), killed when the test ends."""
    server = RedisServer(str(tmp_path_factory.mktemp("redis")))
    server.start()
    try:
        yield server
    finally:
        server.kill()
