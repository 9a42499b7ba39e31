"""A newcomer's first hour: the README's commands as written, in a new shell,
and commands that leave the running app's files alone. Real processes:
bash, `python -m tray_app run --headless`, valkey-server, `telemetry-tray init`.
Every HOME here is a temp directory; the real one is never touched."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, need, run_cli, wait_for
from engine_util import terminate
from tray_app import __version__
from tray_app.config import load_config

README = ROOT / "README.md"
VENV_SCRIPT = ROOT / ".venv" / "bin" / "telemetry-tray"


# ----------------------------------------------------------------------------- `telemetry-tray` on PATH

def readme_block(marker: str) -> str:
    """The command in the ```sh block after ``<!-- marker -->`` (as .ci/run reads it)."""
    m = re.search(rf"<!-- {marker} -->\s*```sh\n(.*?)\n```", README.read_text(), re.S)
    assert m, f"README.md: no {marker} block"
    return m.group(1).strip()


def link_step() -> str:
    """The app command's step that puts `telemetry-tray` on PATH."""
    steps = [s.strip() for s in readme_block("app-command").split("&&")]
    assert steps[-1] == ".venv/bin/telemetry-tray"  # the app command still ends by starting the app
    [step] = [s for s in steps if "link-launcher" in s]
    return step


@pytest.fixture()
def new_user(tmp_path: Path) -> Path:
    """A temp HOME set up as Debian sets up a new account (/etc/skel)."""
    home = tmp_path / "newcomer"
    skel = Path("/etc/skel")
    need((skel / ".profile").is_file(), "no /etc/skel/.profile (not Debian/Ubuntu)")
    shutil.copytree(skel, home, symlinks=True)
    return home


def fresh_env(home: Path, path: str = "/usr/local/bin:/usr/bin:/bin") -> dict[str, str]:
    """What a new login starts from: no venv, no TELEMETRY_TRAY_*, nothing of this test run."""
    return {"HOME": str(home), "PATH": path, "LANG": "C.UTF-8", "USER": os.environ.get("USER", "user")}


def login_shell(home: Path, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-lc", script], capture_output=True, text=True, timeout=120,
                          env=fresh_env(home), cwd=str(home))


def run_link_step(home: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = fresh_env(home, **({"path": path} if path else {}))
    return subprocess.run(["sh", "-c", link_step()], capture_output=True, text=True, timeout=60,
                          env=env, cwd=ROOT)


def test_getting_started_commands_work_in_a_new_shell(new_user: Path) -> None:
    need(VENV_SCRIPT.is_file(), f"{VENV_SCRIPT} missing: run the README's install first")
    r = run_link_step(new_user)
    assert r.returncode == 0, r.stderr
    link = new_user / ".local" / "bin" / "telemetry-tray"
    assert link.is_symlink() and Path(os.readlink(link)) == VENV_SCRIPT
    assert (link.parent.stat().st_mode & 0o777) == 0o700
    # ~/.local/bin did not exist at this login: the step says what to do
    assert "not on your PATH" in r.stderr and "log out and in" in r.stderr
    # a new (login) shell: by full path, and by name as Getting started types it
    r = login_shell(new_user, '"$HOME/.local/bin/telemetry-tray" --version')
    assert r.returncode == 0 and r.stdout.strip() == f"telemetry-tray {__version__}", r.stderr
    r = login_shell(new_user, "command -v telemetry-tray && telemetry-tray --version && "
                              "telemetry-tray hooks status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == str(link) and lines[1] == f"telemetry-tray {__version__}"
    assert "cursor  not installed" in r.stdout
    # running the app command again: the same link, no complaint; PATH already has it now
    r = run_link_step(new_user, path=f"{link.parent}:/usr/bin:/bin")
    assert r.returncode == 0 and r.stderr == "" and Path(os.readlink(link)) == VENV_SCRIPT


def test_link_step_never_clobbers_a_program_that_is_not_ours(new_user: Path) -> None:
    need(VENV_SCRIPT.is_file(), f"{VENV_SCRIPT} missing: run the README's install first")
    bindir = new_user / ".local" / "bin"
    bindir.mkdir(parents=True)
    mine = bindir / "telemetry-tray"
    mine.write_text("#!/bin/sh\necho mine\n")
    mine.chmod(0o755)
    r = run_link_step(new_user)
    assert r.returncode == 0 and "left alone" in r.stderr  # the app command goes on to start the app
    assert not mine.is_symlink() and mine.read_text() == "#!/bin/sh\necho mine\n"
    # a pipx install's link is not ours either
    mine.unlink()
    pipx = new_user / ".local" / "share" / "pipx" / "venvs" / "telemetry-tray" / "bin" / "telemetry-tray"
    mine.symlink_to(pipx)
    assert run_link_step(new_user).returncode == 0 and Path(os.readlink(mine)) == pipx
    # an earlier checkout's link (moved away since: dangling) is ours: replaced
    mine.unlink()
    mine.symlink_to("/old/checkout/.venv/bin/telemetry-tray")
    assert run_link_step(new_user).returncode == 0 and Path(os.readlink(mine)) == VENV_SCRIPT


# ----------------------------------------------------------------------------- the running app's endpoint file

@pytest.fixture()
def headless_engine(app_home: Path, server_binary, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:  # type: ignore[no-untyped-def]
    """`telemetry-tray run --headless` with its private Redis, under the temp home."""
    log = open(tmp_path / "headless.log", "a")  # noqa: SIM115 - the child writes to it
    proc = subprocess.Popen([sys.executable, "-m", "tray_app", "run", "--headless", "--no-monitors"],
                            env=dict(os.environ), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        yield proc
    finally:
        terminate(proc)
        log.close()


def test_init_leaves_the_running_apps_endpoint_file_alone(app_home: Path,
                                                          headless_engine: subprocess.Popen[str]) -> None:
    cfg = load_config()
    endpoint = cfg.paths.endpoint_file
    wait_for(lambda: run_cli("status", env=dict(os.environ), timeout=30).returncode == 0, timeout=45,
             what="the headless engine running")
    before = endpoint.read_bytes()
    assert f'"pid": {headless_engine.pid}'.encode() in before
    stat_before = endpoint.stat()
    r = run_cli("init", env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert "private server" in r.stdout
    assert endpoint.read_bytes() == before
    assert endpoint.stat().st_mtime_ns == stat_before.st_mtime_ns
    # the app still answers through what it published
    assert run_cli("status", env=dict(os.environ), timeout=30).returncode == 0
    assert headless_engine.poll() is None


def test_init_without_the_app_publishes_nothing(app_home: Path, server_binary) -> None:  # type: ignore[no-untyped-def]
    """`init` alone starts the private server for itself and stops it: it leaves
    no endpoint file pointing at a server that is gone."""
    cfg = load_config()
    r = run_cli("init", env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert not cfg.paths.endpoint_file.exists()
