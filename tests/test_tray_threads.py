"""Threading rules: pystray is touched only through the marshal (on the UI
thread); clicks never run engine calls on the UI thread; the refresher shows
a model at most once a second and only when it changed."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import need, wait_for

from tray_app.config import TraySettings, load_config
from tray_app.engine.health import PAUSED, RUNNING, HealthSnapshot
from tray_app.tray.alerts import AlertPolicy
from tray_app.tray.menu import (
    A_EXPORT,
    A_NO_RECORD_30M,
    A_PAUSE,
    A_QUIT,
    A_RECORD_AGAIN,
    A_RESUME,
    A_RETRY_DLQ,
    ICON_STATES,
    build_menu,
)
from tray_app.tray.refresh import MENU_FILE, Refresher, RefreshGate
from tray_app.tray.ui import GLibMarshal, TrayView, pystray_menu

TRAY = TraySettings()


class UiThread:
    """A stand-in for the toolkit's main loop: a thread draining a queue."""

    def __init__(self) -> None:
        self.q: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="fake-ui", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            fn, args = item
            fn(*args)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        self.q.put((fn, args))

    def drain(self) -> None:
        done = threading.Event()
        self.call(done.set)
        assert done.wait(5)

    def close(self) -> None:
        self.q.put(None)
        self.thread.join(5)


class FakeIcon:
    """Records which thread touched it."""

    def __init__(self) -> None:
        object.__setattr__(self, "touches", [])
        object.__setattr__(self, "visible", False)

    def __setattr__(self, name: str, value: Any) -> None:
        self.touches.append((name, threading.current_thread().name))
        object.__setattr__(self, name, value)

    def stop(self) -> None:
        self.touches.append(("stop", threading.current_thread().name))


@pytest.fixture()
def dummy_pystray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSTRAY_BACKEND", "dummy")  # importable without a display


def snap(**kw: Any) -> HealthSnapshot:
    base: dict[str, Any] = dict(state=RUNNING, redis_ok=True, redis_status="ok")
    base.update(kw)
    return HealthSnapshot(**base)


def test_view_touches_pystray_only_on_the_ui_thread(dummy_pystray: None) -> None:
    ui = UiThread()
    icon = FakeIcon()
    view = TrayView(icon, ui, {s: f"img-{s}" for s in ("running", "paused", "degraded", "error", "starting")},
                    on_action=lambda a: None)
    callers = [threading.Thread(target=view.show, args=(build_menu(snap(rate_1m=float(i)), TRAY),),
                                name=f"caller-{i}") for i in range(5)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    view.show(build_menu(snap(state=PAUSED), TRAY))
    view.stop()
    ui.drain()
    ui.close()
    assert icon.touches, "nothing reached the icon"
    assert {thread for _, thread in icon.touches} == {"fake-ui"}
    names = [n for n, _ in icon.touches]
    assert names.count("icon") == 2        # running, then paused: the image only when the state changed
    assert names.count("menu") == 6        # every model differed in shown text
    assert names[-1] == "stop" and icon.visible is True


def test_menu_clicks_only_queue_work(dummy_pystray: None) -> None:
    import pystray

    submitted: list[tuple[str, str]] = []
    model = build_menu(snap(dlq_length=2), TRAY)
    menu = pystray_menu(model, lambda a: submitted.append((a, threading.current_thread().name)))
    items = {i.text: i for i in menu.items if i is not pystray.Menu.SEPARATOR}
    items["Pause"](None)
    dead = items["Dead letters: 2"]
    assert dead.submenu is not None
    next(iter(dead.submenu.items))(None)
    assert submitted == [(A_PAUSE, "MainThread"), (A_RETRY_DLQ, "MainThread")]
    # information lines do nothing and are greyed out
    assert not items["Backlog: 0, pending: 0"].enabled
    assert items["Running"].default
    assert isinstance(menu, pystray.Menu)


def test_glib_marshal_runs_on_the_loop_thread() -> None:
    try:
        from gi.repository import GLib
    except ImportError:
        need(False, "PyGObject not installed")
        return
    loop = GLib.MainLoop.new(None, False)
    ran_on: list[str] = []
    t = threading.Thread(target=loop.run, name="glib-loop", daemon=True)
    t.start()
    try:
        marshal = GLibMarshal()
        done = threading.Event()

        def work() -> None:
            ran_on.append(threading.current_thread().name)
            done.set()

        threading.Thread(target=marshal.call, args=(work,), name="other").start()
        assert done.wait(5)
        assert ran_on == ["glib-loop"]
    finally:
        loop.quit()
        t.join(5)


class FakeClock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


def test_gate_shows_changes_at_most_once_a_second() -> None:
    clock = FakeClock()
    gate = RefreshGate(1.0, clock)
    a, b, c = (build_menu(snap(rate_1m=r), TRAY) for r in (1.0, 2.0, 3.0))
    assert gate.offer(a)
    assert not gate.offer(a)                 # unchanged: never re-shown
    clock.t += 0.4
    assert not gate.offer(b)                 # changed, but too soon
    assert gate.wait_s() == pytest.approx(0.6)
    clock.t += 0.6
    assert gate.offer(b) and gate.shown == b
    clock.t += 5
    assert not gate.offer(build_menu(snap(rate_1m=2.0, total_acked=7), TRAY))  # invisible change
    assert gate.offer(c)


def test_refresher_thread_rate_limits_and_writes_the_menu_file(tmp_path: Path) -> None:
    counter = {"n": 0}

    def health() -> HealthSnapshot:  # changes on every read, as under load
        counter["n"] += 1
        return snap(rate_1m=float(counter["n"]))

    shown: list[float] = []
    r = Refresher(health=health, paused=lambda: False, tray=TRAY, show=lambda m: shown.append(time.monotonic()),
                  alert=lambda n: None, policy=AlertPolicy(300, 10, 100), menu_file=tmp_path / MENU_FILE,
                  interval_s=1.0)
    r.start()
    try:
        for _ in range(50):                  # pokes (clicks) must not break the limit
            r.poke()
        wait_for(lambda: len(shown) >= 3, timeout=10, what="three refreshes")
    finally:
        r.stop()
        r.join(5)
    gaps = [b - a for a, b in zip(shown, shown[1:])]
    assert all(g >= 0.95 for g in gaps), gaps
    data = json.loads((tmp_path / MENU_FILE).read_text())
    assert data["items"][1]["text"].startswith("Ingest: ") and data["status"] == "Running"


def test_refresher_sends_the_runtime_s_notices(tmp_path: Path) -> None:
    """The server's recovery message is not in the snapshot: the refresher asks
    the runtime for it; a restart of the private server is in the snapshot."""
    current = {"snap": snap(server_status="ok"), "recovery": ""}
    sent: list[str] = []
    r = Refresher(health=lambda: current["snap"], paused=lambda: False, tray=TRAY, show=lambda m: None,
                  alert=lambda n: sent.append(n.title), policy=AlertPolicy(300, 10, 100),
                  server_recovery=lambda: current["recovery"])
    r.tick()
    assert sent == []
    current["recovery"] = "corrupt append-only file set aside in /x/corrupt-1"
    current["snap"] = snap(server_status="ok", server_restarts=1)
    r.tick()
    r.tick()
    assert sent == ["Redis data set aside", "Redis server restarted"]


# ----------------------------------------------------------------------------- the app's actions

class FakeRuntime:
    """Stands in for EngineRuntime: what the tray reads and the commands it sends."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.paused = False
        self.ready = True
        self.server_recovery = ""
        self.stopped = False
        self._snap = snap(today_events=5)
        self._window: tuple[float, float | None] | None = None

    def _rec(self, name: str) -> None:
        self.calls.append((name, threading.current_thread().name))

    def pause(self) -> bool:
        self._rec("pause")
        self.paused = True
        return True

    def resume(self) -> bool:
        self._rec("resume")
        self.paused = False
        return True

    def retry_dead_letters(self) -> int:
        self._rec("retry")
        return 4

    def no_record(self, duration: str | float | None = None) -> None:
        self._rec(f"no_record {duration}")
        self._window = (time.time(), time.time() + 1800 if duration == "30m" else None)

    def record_again(self) -> None:
        self._rec("record_again")
        self._window = None

    def not_recording(self, now: float | None = None) -> tuple[float, float | None] | None:
        return self._window

    def health(self) -> HealthSnapshot:
        return snap(state=PAUSED) if self.paused else self._snap

    def start_background(self) -> None:
        pass

    def stop(self, timeout_s: float = 10.0) -> bool:
        self.stopped = True
        return True


class FakeNotifier:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.app_icon: Path | None = None

    def start(self) -> FakeNotifier:
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        pass

    def notify(self, title: str, message: str, urgency: str = "normal", icon: Path | None = None,
               buttons: tuple = (), kind: str = "") -> None:
        self.sent.append((title, message))


def test_app_runs_clicks_on_the_action_thread(app_home: Path, dummy_pystray: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from tray_app.tray import app as app_mod

    opened: list[Path] = []
    monkeypatch.setattr(app_mod, "open_path", lambda p, on_failure=None: opened.append(p) or True)
    cfg = load_config()
    runtime, notifier, ui = FakeRuntime(), FakeNotifier(), UiThread()
    app = app_mod.TrayApp(cfg, runtime=runtime, notifier=notifier)  # type: ignore[arg-type]
    icon = FakeIcon()
    app.view = TrayView(icon, ui, {s: s for s in ICON_STATES}, app.actions.submit)
    app.start_background()
    try:
        wait_for(lambda: (cfg.paths.state_dir / MENU_FILE).exists(), what="first menu")
        # a click arrives on the UI thread; it must return at once
        clicked = threading.Event()

        def click(action: str) -> None:
            app.actions.submit(action)
            clicked.set()

        ui.call(click, A_PAUSE)
        assert clicked.wait(5)
        wait_for(lambda: runtime.calls, what="pause to run")
        assert runtime.calls == [("pause", "tray-actions")]
        wait_for(lambda: json.loads((cfg.paths.state_dir / MENU_FILE).read_text())["status"] == "Paused",
                 timeout=5, what="menu to show Paused")
        ui.call(click, A_RESUME)
        ui.call(click, A_RETRY_DLQ)
        wait_for(lambda: len(runtime.calls) == 3, what="resume and retry")
        assert {t for _, t in runtime.calls} == {"tray-actions"}
        assert ("Dead letters re-queued", "4 dead letters were sent back for ingest.") in notifier.sent

        ui.call(click, A_NO_RECORD_30M)   # Don't record > For 30 minutes
        menu = wait_for(lambda: (m := json.loads((cfg.paths.state_dir / MENU_FILE).read_text()))
                        ["status"].startswith("Not recording") and m, timeout=5, what="menu: not recording")
        assert menu["status"] == "Not recording: 30 min left" and menu["icon_state"] == "not_recording"
        assert "Record again" in menu["text"] and "Don't record" not in menu["text"]
        ui.call(click, A_RECORD_AGAIN)
        wait_for(lambda: json.loads((cfg.paths.state_dir / MENU_FILE).read_text())["status"] == "Running",
                 timeout=5, what="menu: recording again")
        assert runtime.calls[3:] == [("no_record 30m", "tray-actions"), ("record_again", "tray-actions")]

        ui.call(click, A_EXPORT)
        wait_for(lambda: any(t == "Diagnostics bundle saved" for t, _ in notifier.sent), what="export")
        bundle = Path(next(m for t, m in notifier.sent if t == "Diagnostics bundle saved"))
        assert bundle.is_file() and bundle.suffix == ".zip"
        assert opened == [bundle.parent]     # the folder is shown to the user

        ui.call(click, A_QUIT)
        wait_for(lambda: ("stop", "fake-ui") in icon.touches, what="icon.stop on the UI thread")
        assert app.quit_requested.is_set()
        assert all(thread == "fake-ui" for _, thread in icon.touches)
    finally:
        assert app.shutdown(timeout_s=5)
        ui.close()
    assert runtime.stopped
    assert not app.refresher.is_alive()
