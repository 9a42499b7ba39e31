"""A damaged append-only file never stops the app: the private server's
files are moved aside (never deleted), the part that loads is kept, the
supervisor is told (last_recovery) and `doctor` reports the damage first.
A truncated tail loads with the last command lost, and says so."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conftest import run_cli, wait_for
from tray_app import aof
from tray_app.config import load_config
from tray_app.fileutil import pid_alive
from tray_app.redis_conn import RedisProvider, ensure_streams

N = 60


def _fill(provider: RedisProvider, n: int = N) -> list[bytes]:
    assert provider.endpoint is not None
    c = provider.endpoint.client()
    ensure_streams(c)
    ids = [c.xadd("telemetry:events", {"n": str(i), "prompt": f"prompt number {i} " * 5}) for i in range(n)]
    c.close()
    return ids


def _incr(data_dir: Path) -> Path:
    [f] = sorted((data_dir / "appendonlydir").glob("*.incr.aof"))
    return f


def _entries(provider: RedisProvider) -> list[int]:
    assert provider.endpoint is not None
    c = provider.endpoint.client()
    try:
        return [int(f[b"n"]) for _, f in c.xrange("telemetry:events") if b"n" in f]
    finally:
        c.close()


@pytest.fixture()
def written(app_home: Path, server_binary) -> tuple[Path, list[bytes]]:  # type: ignore[no-untyped-def]
    """A private server's data directory holding N events, server stopped."""
    cfg = load_config()
    provider = RedisProvider(cfg)
    provider.start()
    ids = _fill(provider)
    provider.stop()
    return cfg.paths.data_dir / "redis", ids


def _corrupt_middle(path: Path) -> bytes:
    data = path.read_bytes()
    mid = len(data) // 2
    path.write_bytes(data[:mid] + b"\x00garbage\xff" + data[mid:])
    return path.read_bytes()


def test_garbage_in_the_middle_is_set_aside_and_the_readable_part_kept(written, app_home: Path) -> None:
    data_dir, _ = written
    damaged = _corrupt_middle(_incr(data_dir))

    # doctor sees it before the app does: FAIL, naming the file and what happens next
    out = run_cli("doctor")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith(("OK   redis data", "WARN redis data",
                                                                       "FAIL redis data")))
    assert out.returncode == 1 and line.startswith("FAIL redis data"), out.stdout
    assert "appendonly.aof.1.incr.aof is corrupt" in line and "corrupt-<time>" in line

    # the app starts anyway (it used to exit 69: "use valkey-check-aof --fix")
    init = run_cli("init")
    assert init.returncode == 0, init.stderr

    provider = RedisProvider(load_config())
    provider.start()
    try:
        kept = _entries(provider)
        assert 0 < len(kept) < N and kept == list(range(len(kept)))  # a prefix, in order
    finally:
        provider.stop()
    # what init's server set aside: kept byte for byte, user-only
    [aside] = sorted(data_dir.glob("corrupt-*"))
    assert (aside / "appendonlydir" / _incr(data_dir).name).read_bytes() == damaged
    assert stat.S_IMODE(aside.stat().st_mode) == 0o700
    for f in (aside / "appendonlydir").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert run_cli("doctor").stdout.count("OK   redis data") == 1


def test_last_recovery_names_what_was_set_aside(written) -> None:
    data_dir, _ = written
    _corrupt_middle(_incr(data_dir))
    provider = RedisProvider(load_config())
    provider.start()
    try:
        msg = provider.last_recovery
        assert msg is not None and "\n" not in msg
        [aside] = sorted(data_dir.glob("corrupt-*"))
        assert str(aside) in msg and "readable part" in msg
        assert "valkey-check-aof" not in msg  # a tool the app does not ship
        assert provider.ensure_running() is True
    finally:
        provider.stop()


def test_corrupted_while_down_ensure_running_recovers(app_home: Path, server_binary) -> None:  # type: ignore[no-untyped-def]
    """The supervisor's path: the server dies, its file is damaged meanwhile;
    ensure_running() brings it back with the readable part and says so."""
    provider = RedisProvider(load_config())
    provider.start()
    try:
        _fill(provider)
        srv = provider.server
        assert srv is not None and provider.last_recovery is None
        wait_for(lambda: b"prompt number %d " % (N - 1) in _incr(srv.data_dir).read_bytes(),
                 what="the last event in the append-only file")
        pid = srv.pid or 0
        os.kill(pid, 9)
        wait_for(lambda: not pid_alive(pid) or srv._proc is not None and srv._proc.poll() is not None,
                 what="the server to die")
        _corrupt_middle(_incr(srv.data_dir))
        assert provider.ensure_running() is True
        assert provider.last_recovery is not None and "corrupt-" in provider.last_recovery
        kept = _entries(provider)
        assert 0 < len(kept) < N and kept == list(range(len(kept)))
    finally:
        provider.stop()


def test_truncated_tail_loads_and_says_so(written) -> None:
    data_dir, _ = written
    incr = _incr(data_dir)
    incr.write_bytes(incr.read_bytes()[:-7])
    out = run_cli("doctor")
    assert "WARN redis data" in out.stdout and "ends mid-command" in out.stdout, out.stdout
    provider = RedisProvider(load_config())
    provider.start()
    try:
        assert _entries(provider) == list(range(N - 1))  # the cut-short last event only
        msg = provider.last_recovery
        assert msg is not None and "ended mid-command" in msg and "\n" not in msg
        assert list(data_dir.glob("corrupt-*")) == []  # nothing had to be set aside
    finally:
        provider.stop()


def test_unreadable_manifest_starts_empty_keeping_the_files(written) -> None:
    data_dir, _ = written
    manifest = data_dir / "appendonlydir" / aof.MANIFEST
    manifest.write_bytes(b"\xff\xfe not a manifest\n")
    original = {f.name: f.read_bytes() for f in (data_dir / "appendonlydir").iterdir()}
    provider = RedisProvider(load_config())
    provider.start()
    try:
        assert _entries(provider) == []
        [aside] = sorted(data_dir.glob("corrupt-*"))
        assert {f.name: f.read_bytes() for f in (aside / "appendonlydir").iterdir()} == original
        assert provider.last_recovery is not None and "started empty" in provider.last_recovery
    finally:
        provider.stop()


# ----------------------------------------------------------------------------- the parser

def _cmd(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_scan_commands() -> None:
    a, b = _cmd(b"XADD", b"s", b"*", b"k", b"v"), _cmd(b"XACK", b"s", b"g", b"1-0")
    assert aof.scan_commands(a + b) == (len(a + b), None, False)
    assert aof.scan_commands(a + b[:-3])[::2] == (len(a), True)  # cut short: the tail
    good, reason, truncated = aof.scan_commands(a + b"junk" + b)
    assert (good, truncated) == (len(a), False) and reason
    # a transaction is kept whole or not at all
    multi = _cmd(b"MULTI") + b + _cmd(b"EXEC")
    assert aof.scan_commands(a + multi)[0] == len(a + multi)
    assert aof.scan_commands(a + multi[:-len(_cmd(b"EXEC"))])[0] == len(a)
    # annotations are lines of their own
    assert aof.scan_commands(b"#TS:1700000000\r\n" + a)[1] is None
    # a wrong length inside an argument is damage, not a short read
    assert aof.scan_commands(a.replace(b"$1\r\nk", b"$2\r\nk"))[2] is False


def test_corrupt_rdb_base_doctor_fails_and_the_app_starts_empty(written) -> None:
    """Damage inside the RDB base file is only seen by loading it: doctor loads
    a throwaway copy; the app, after the salvaged files fail too, starts empty."""
    data_dir, _ = written
    provider = RedisProvider(load_config())
    provider.start()
    provider.endpoint.client().bgrewriteaof()  # type: ignore[union-attr]  # the events go into the base
    srv = provider.server
    assert srv is not None
    wait_for(lambda: any(f.stat().st_size > 1000 for f in (srv.data_dir / "appendonlydir").glob("*.base.rdb")),
             what="a rewritten base file")
    provider.stop()
    [base] = (data_dir / "appendonlydir").glob("*.base.rdb")
    raw = bytearray(base.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 8):
        raw[i] ^= 0xFF
    base.write_bytes(bytes(raw))

    out = run_cli("doctor")
    assert out.returncode == 1 and "FAIL redis data" in out.stdout and "does not load" in out.stdout, out.stdout
    provider = RedisProvider(load_config())
    provider.start()
    try:
        assert provider.ensure_running() is True
        msg = provider.last_recovery
        assert msg is not None and "started empty" in msg
        assert len(list(data_dir.glob("corrupt-*"))) == 2  # the originals, and the salvage attempt
        assert any((d / "appendonlydir" / base.name).read_bytes() == bytes(raw) for d in data_dir.glob("corrupt-*"))
    finally:
        provider.stop()
