"""Another local user cannot get the Redis password or the events: the app
never uses a directory for its socket or private files that it did not just
create or that is not the user's own 0700 directory (never a symlink); the
hooks connect only to such a socket; the private server's files are
user-only. Tests that need a second user create a throwaway one (root only;
they skip locally without root and fail under CI)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import need, wait_for
from test_hook_events import CURSOR_BASE, hook_env, run_hook, spool_files
from tray_app.config import load_config
from tray_app.errors import UnsafeDirectory
from tray_app.paths import make_private_dir
from tray_app.redis_conn import RedisProvider, read_endpoint_file
from tray_app.redis_server import SOCKET_DIR_RECORD, ManagedServer

PROMPT = {**CURSOR_BASE, "hook_event_name": "beforeSubmitPrompt", "prompt": "my secret prompt"}


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def long_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home whose socket path would not fit in sun_path."""
    home = tmp_path / ("d" * 60) / ("e" * 60)
    monkeypatch.setenv("TELEMETRY_TRAY_HOME", str(home))
    return home


def old_predictable_dir(redis_dir: Path) -> Path:
    """Where versions before this fix put the socket of a long home."""
    digest = hashlib.sha256(str(redis_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"ttray-{os.getuid()}-{digest}"


# ----------------------------------------------------------------------------- a second user

@dataclass(frozen=True)
class OtherUser:
    name: str
    uid: int
    gid: int

    def run(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), user=self.uid, group=self.gid, extra_groups=[],
                              capture_output=True, text=True, timeout=30, check=True, **kw)  # type: ignore[call-overload]

    def mkdir(self, path: Path, perms: int) -> Path:
        self.run("mkdir", "-p", str(path))
        self.run("chmod", f"{perms:o}", str(path))
        return path


@pytest.fixture()
def other_user() -> Iterator[OtherUser]:
    need(os.geteuid() == 0 and shutil.which("useradd") is not None,
         "a second user is needed: run as root (with useradd) to create a throwaway one")
    name = f"ttatk{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True, timeout=30)
    try:
        import pwd

        pw = pwd.getpwnam(name)
        yield OtherUser(name, pw.pw_uid, pw.pw_gid)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=30)


LISTENER = r"""
import os, socket, sys, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
os.chmod(path, 0o777)
s.listen(8)
s.settimeout(0.1)
print("ready", flush=True)
while True:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    c.settimeout(1)
    try:
        data = c.recv(65536)
    except OSError:
        data = b""
    print("GOT", data, flush=True)
"""


class FakeRedis:
    """A unix socket listener run by the attacker: records whatever connects."""

    def __init__(self, path: Path, user: OtherUser | None = None) -> None:
        kw: dict = {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}
        self.proc = subprocess.Popen(["/usr/bin/python3", "-I", "-c", LISTENER, str(path)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, **kw)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready", self.proc.stderr.read() if self.proc.stderr else ""

    def received(self) -> str:
        self.proc.kill()
        out, _ = self.proc.communicate(timeout=10)
        return out


# ----------------------------------------------------------------------------- make_private_dir

def test_make_private_dir_tightens_an_open_dir_of_ours(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)
    make_private_dir(d)
    assert mode(d) == 0o700
    fresh = tmp_path / "a" / "b"
    make_private_dir(fresh)
    assert mode(fresh) == 0o700


def test_make_private_dir_refuses_our_dir_that_stays_open_after_chmod(tmp_path: Path) -> None:
    """An open directory of ours whose chmod fails (immutable here; a filesystem
    without modes elsewhere) is refused, not used as it is."""
    need(os.geteuid() == 0 and shutil.which("chattr") is not None, "chattr +i needs root")
    d = tmp_path / "stuck-open"
    d.mkdir()
    d.chmod(0o777)
    made = subprocess.run(["chattr", "+i", str(d)], capture_output=True, text=True, timeout=30)
    need(made.returncode == 0, f"chattr +i not supported here: {made.stderr.strip()}")
    try:
        with pytest.raises(UnsafeDirectory) as info:
            make_private_dir(d)
        assert "has mode 0777, not 0700" in str(info.value) and "\n" not in str(info.value)
    finally:
        subprocess.run(["chattr", "-i", str(d)], capture_output=True, timeout=30)


def test_make_private_dir_refuses_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(UnsafeDirectory) as info:
        make_private_dir(link)
    msg = str(info.value)
    assert str(link) in msg and "symbolic link" in msg and "\n" not in msg


def test_make_private_dir_refuses_another_users_dir(tmp_path: Path, other_user: OtherUser) -> None:
    d = other_user.mkdir(Path(tempfile.gettempdir()) / f"tt-other-{secrets.token_hex(4)}", 0o777)
    try:
        with pytest.raises(UnsafeDirectory) as info:
            make_private_dir(d)
        msg = str(info.value)
        assert str(d) in msg and f"uid {other_user.uid}" in msg and "\n" not in msg
        assert mode(d) == 0o777 and d.stat().st_uid == other_user.uid  # theirs, untouched
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------- the socket directory

def test_long_home_socket_dir_is_unpredictable_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           app_home: Path, server_binary) -> None:  # type: ignore[no-untyped-def]
    long_home(tmp_path, monkeypatch)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    cfg = load_config()
    provider = RedisProvider(cfg)
    ep = provider.start()
    srv = provider.server
    assert srv is not None
    try:
        sock_dir = srv.socket_dir
        assert sock_dir != srv.run_dir and sock_dir != old_predictable_dir(srv.run_dir)
        assert sock_dir.parent == Path(tempfile.gettempdir()) and sock_dir.name.startswith("ttray-")
        assert mode(sock_dir) == 0o700 and sock_dir.stat().st_uid == os.getuid()
        # recorded for later runs (0600), and published to the hooks in the endpoint file
        record = srv.run_dir / SOCKET_DIR_RECORD
        assert record.read_text().strip() == str(sock_dir) and mode(record) == 0o600
        assert ep.url == f"unix://{sock_dir}/redis.sock" and read_endpoint_file(cfg) == ep
        # another process finds the same server through the record
        again = ManagedServer(cfg.paths).start()
        assert again.adopted and again.pid == srv.pid and again.socket_dir == sock_dir
        # and the hook delivers there
        proc, _ = run_hook("cursor", json.dumps(PROMPT), hook_env(cfg.paths.data_dir.parent))
        assert proc.returncode == 0 and spool_files(cfg.paths.data_dir.parent) == []
        assert ep.client().xlen("telemetry:events") == 1
    finally:
        provider.stop()
    assert not sock_dir.exists()  # not left behind in /tmp


def test_xdg_runtime_dir_is_preferred_when_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   app_home: Path, server_binary) -> None:  # type: ignore[no-untyped-def]
    long_home(tmp_path, monkeypatch)
    xdg = Path(tempfile.mkdtemp(prefix="tt-xdg-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    srv = ManagedServer(load_config().paths)
    try:
        srv.start()
        assert srv.socket_dir.parent == xdg and mode(srv.socket_dir) == 0o700 and srv.ping()
    finally:
        srv.stop()
        shutil.rmtree(xdg, ignore_errors=True)


def test_an_open_xdg_runtime_dir_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             app_home: Path, server_binary) -> None:  # type: ignore[no-untyped-def]
    long_home(tmp_path, monkeypatch)
    xdg = Path(tempfile.mkdtemp(prefix="tt-xdg-"))
    xdg.chmod(0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    srv = ManagedServer(load_config().paths)
    try:
        srv.start()
        assert xdg not in srv.socket_dir.parents and mode(srv.socket_dir) == 0o700 and srv.ping()
        assert list(xdg.iterdir()) == []
    finally:
        srv.stop()
        shutil.rmtree(xdg, ignore_errors=True)


def test_attackers_directories_are_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             app_home: Path, server_binary,  # type: ignore[no-untyped-def]
                                             other_user: OtherUser) -> None:
    """The attack of issue 10: another user pre-creates the old predictable
    socket directory 0777 with a socket of theirs in it, offers an
    XDG_RUNTIME_DIR of theirs, and even a record pointing at their directory.
    The app uses none of them and never connects there: the attacker sees
    neither AUTH <password> nor an event."""
    long_home(tmp_path, monkeypatch)
    cfg = load_config()
    tmp = Path(tempfile.gettempdir())
    predictable = other_user.mkdir(old_predictable_dir(cfg.paths.redis_dir), 0o777)
    their_xdg = other_user.mkdir(tmp / f"tt-att-xdg-{secrets.token_hex(4)}", 0o700)
    their_private = other_user.mkdir(tmp / f"tt-att-{secrets.token_hex(4)}", 0o700)
    fakes = [FakeRedis(d / "redis.sock", other_user) for d in (predictable, their_private)]
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(their_xdg))
    make_private_dir(cfg.paths.redis_dir)
    (cfg.paths.redis_dir / SOCKET_DIR_RECORD).write_text(f"{their_private}\n")
    provider = RedisProvider(cfg)
    try:
        ep = provider.start()
        srv = provider.server
        assert srv is not None
        for theirs in (predictable, their_xdg, their_private):
            assert srv.socket_dir != theirs and theirs not in srv.socket_dir.parents
        assert srv.socket_dir.stat().st_uid == os.getuid() and mode(srv.socket_dir) == 0o700
        assert ep.client().ping()
        # the hook, run with the same endpoint file, delivers to the real server
        home = cfg.paths.data_dir.parent
        proc, _ = run_hook("cursor", json.dumps(PROMPT), hook_env(home))
        assert proc.returncode == 0
        assert ep.client().xlen("telemetry:events") == 1
        # an endpoint file pointing at the attacker's socket: the hook spools instead
        ep_data = json.loads(cfg.paths.endpoint_file.read_text())
        ep_data["url"] = f"unix://{their_private}/redis.sock"
        cfg.paths.endpoint_file.write_text(json.dumps(ep_data))
        proc, _ = run_hook("cursor", json.dumps(PROMPT), hook_env(home))
        assert proc.returncode == 0 and len(spool_files(home)) == 1
    finally:
        provider.stop()
        got = [f.received() for f in fakes]
        for d in (predictable, their_xdg, their_private):
            shutil.rmtree(d, ignore_errors=True)
    assert got == ["", ""], f"the attacker's socket was contacted: {got}"


# ----------------------------------------------------------------------------- the hook

@pytest.fixture()
def open_dir_listener(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A listener on a socket in a directory of ours that is open to everyone (0777)."""
    d = Path(tempfile.mkdtemp(prefix="tt-open-"))
    d.chmod(0o777)
    path = d / "redis.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(8)
    srv.settimeout(0.1)
    got: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            got.append(conn.recv(65536))
            conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield path, got
    finally:
        stop.set()
        t.join(2)
        srv.close()
        shutil.rmtree(d, ignore_errors=True)


def _endpoint(home: Path, url: str) -> None:
    (home / "state").mkdir(parents=True, exist_ok=True)
    (home / "state" / "redis-endpoint.json").write_text(json.dumps(
        {"url": url, "password": "the-password", "managed": True, "pid": os.getpid()}))


def test_hook_does_not_connect_to_a_socket_in_an_open_directory(
        app_home: Path, open_dir_listener: tuple[Path, list[bytes]]) -> None:
    path, got = open_dir_listener
    _endpoint(app_home, f"unix://{path}")
    proc, took = run_hook("cursor", json.dumps(PROMPT), hook_env(app_home))
    assert proc.returncode == 0 and proc.stdout == b"{}\n"
    assert len(spool_files(app_home)) == 1  # the event is kept, on disk
    time.sleep(0.3)  # give a (wrong) connection time to show up at the listener
    assert got == []


def test_hook_does_not_connect_to_another_users_socket(app_home: Path, other_user: OtherUser) -> None:
    d = other_user.mkdir(Path(tempfile.gettempdir()) / f"tt-att-{secrets.token_hex(4)}", 0o700)
    fake = FakeRedis(d / "redis.sock", other_user)
    try:
        _endpoint(app_home, f"unix://{d}/redis.sock")
        claude_prompt = {"session_id": "s-att", "transcript_path": "/tmp/t.jsonl", "cwd": "/tmp",
                         "hook_event_name": "UserPromptSubmit", "prompt": "my secret prompt"}
        proc, _ = run_hook("claude", json.dumps(claude_prompt), hook_env(app_home))
        assert proc.returncode == 0 and len(spool_files(app_home)) == 1
    finally:
        got = fake.received()
        shutil.rmtree(d, ignore_errors=True)
    assert got == ""


# ----------------------------------------------------------------------------- files at rest

def test_private_server_files_are_user_only(app_home: Path, server_binary) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config()
    provider = RedisProvider(cfg)
    ep = provider.start()
    srv = provider.server
    assert srv is not None
    aof_dir = srv.data_dir / "appendonlydir"
    try:
        c = ep.client()
        c.xadd("telemetry:events", {"prompt": "my secret prompt"})
        wait_for(lambda: any(b"my secret prompt" in f.read_bytes() for f in aof_dir.glob("*.incr.aof")),
                 what="the append-only file")
    finally:
        provider.stop()

    def modes() -> dict[str, int]:
        out = {p.name: mode(p) for p in [aof_dir, *aof_dir.iterdir(), srv.log_file, srv.data_dir]}
        assert len(out) >= 6
        return out

    assert set(modes().values()) <= {0o700, 0o600}
    assert modes()[aof_dir.name] == 0o700 and modes()[srv.log_file.name] == 0o600
    # files left 0644 / 0755 by an older version are made private at the next start
    aof_dir.chmod(0o755)
    for f in aof_dir.iterdir():
        f.chmod(0o644)
    srv.log_file.chmod(0o644)
    provider = RedisProvider(cfg)
    provider.start()
    provider.stop()
    assert set(modes().values()) <= {0o700, 0o600}


def test_symlinked_run_dir_is_refused_in_one_line_and_doctor_says_so(app_home: Path, tmp_path: Path,
                                                                      server_binary) -> None:  # type: ignore[no-untyped-def]
    from conftest import run_cli

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (app_home / "run").mkdir()
    (app_home / "run" / "redis").symlink_to(elsewhere)
    out = run_cli("init")
    assert out.returncode == 77, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert "run/redis is a symbolic link" in line
    assert list(elsewhere.iterdir()) == []  # nothing of ours went there
    doc = run_cli("doctor")
    assert doc.returncode == 1 and "FAIL redis dirs" in doc.stdout and "symbolic link" in doc.stdout


def test_socket_dir_removed_while_running_ensure_running_makes_a_new_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app_home: Path, server_binary) -> None:  # type: ignore[no-untyped-def]
    """A temp cleaner removes the mkdtemp socket directory under a live server:
    the server is unreachable; ensure_running() stops it (it is verifiably ours),
    starts it on a new private directory and republishes the endpoint."""
    long_home(tmp_path, monkeypatch)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    cfg = load_config()
    provider = RedisProvider(cfg)
    provider.start()
    srv = provider.server
    assert srv is not None
    try:
        old_dir, old_pid = srv.socket_dir, srv.pid
        shutil.rmtree(old_dir)
        assert provider.ensure_running() is True
        assert srv.socket_dir != old_dir and mode(srv.socket_dir) == 0o700 and srv.pid != old_pid
        ep = read_endpoint_file(cfg)
        assert ep is not None and ep.url == f"unix://{srv.socket_dir}/redis.sock" and ep.client().ping()
    finally:
        provider.stop()
