"""Shared fixtures: a real Redis-compatible server, an isolated app home."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tray_app.errors import ServerBinaryNotFound
from tray_app.redis_server import ServerBinary, find_server_binary, no_retry

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parents[1]


def need(condition: bool, why: str) -> None:
    """Skip locally when a tool is missing; fail under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required under CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def server_binary() -> ServerBinary:
    try:
        return find_server_binary()
    except ServerBinaryNotFound as exc:
        need(False, str(exc))
        raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProc:
    """A real server process on a free loopback port in a temp dir."""

    def __init__(self, binary: ServerBinary, workdir: Path, password: str | None = None,
                 appendonly: bool = True) -> None:
        self.binary = binary
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> "RedisProc":
        args = [self.binary.path, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--save", "", "--daemonize", "no",
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
                "--logfile", str(self.dir / "server.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                c = self.client()
                c.ping()
                c.close()
                return self
            except redis.RedisError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"test redis exited: {(self.dir / 'server.log').read_text()[-500:]}")
                time.sleep(0.02)
        raise RuntimeError("test redis did not start")

    def client(self, **kw: object) -> redis.Redis:
        kw.setdefault("retry", no_retry())
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=10, **kw)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                c = self.client()
                c.shutdown(nosave=False)
            except redis.RedisError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture()
def redis_server(server_binary: ServerBinary, tmp_path: Path) -> Iterator[RedisProc]:
    srv = RedisProc(server_binary, tmp_path / "redis-test").start()
    try:
        yield srv
    finally:
        srv.stop()
        srv.kill()


@pytest.fixture()
def app_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated TELEMETRY_TRAY_HOME; no TELEMETRY_TRAY_* from the outside leaks in."""
    for key in list(os.environ):
        if key.startswith("TELEMETRY_TRAY_"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("TELEMETRY_TRAY_HOME", str(home))
    # the fixtures' events carry fixed dates, many older than retention's default 90 days:
    # the engine would remove their raw rows mid-test. Tests of retention turn it on.
    monkeypatch.setenv("TELEMETRY_TRAY_RETENTION_RAW_DAYS", "0")
    # the user's own home (Cursor's and Claude's files, autostart entries) is never touched
    user = tmp_path / "isolated-user-home"
    user.mkdir()
    monkeypatch.setenv("HOME", str(user))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(user / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(user / ".local" / "share"))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(user / ".claude"))
    monkeypatch.delenv("APPDATA", raising=False)
    # every engine runs the OTLP receiver: on a port of its own, never the user's 4318
    monkeypatch.setenv("TELEMETRY_TRAY_OTLP_RECEIVER_PORT", str(free_port()))
    return home


@pytest.fixture()
def app_env(app_home: Path, redis_server: RedisProc, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for running the app against the test server."""
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", redis_server.url)
    env = {k: v for k, v in os.environ.items()}
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `telemetry-tray ARGS` as a real subprocess."""
    return subprocess.run([sys.executable, "-m", "tray_app", *args], capture_output=True, text=True,
                          env=env if env is not None else dict(os.environ), timeout=timeout,
                          input=input, cwd=str(ROOT))


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
