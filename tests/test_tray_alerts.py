"""Notification policy: rate limits per kind and recovery messages, with an injected clock."""

from __future__ import annotations

from dataclasses import replace

from tray_app.engine.health import DEGRADED, RUNNING, STARTING, STOPPED, HealthSnapshot
from tray_app.tray.alerts import (
    K_DATABASE,
    K_DLQ,
    K_RECORDING,
    K_RECOVERY,
    K_REDIS,
    K_SERVER,
    K_SPOOL,
    K_STORAGE,
    K_THREADS,
    AlertPolicy,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


OK = HealthSnapshot(state=RUNNING, redis_ok=True, redis_status="ok")
REDIS_DOWN = HealthSnapshot(state=DEGRADED, redis_ok=False, redis_status="Connection refused",
                            spool_files=1204)


def db_down(kind: str) -> HealthSnapshot:
    return HealthSnapshot(state=DEGRADED, redis_ok=True, sqlite_ok=False, sqlite_status=kind)


def policy(clock: Clock, interval: float = 300.0, grace: float = 2.0) -> AlertPolicy:
    return AlertPolicy(interval_s=interval, dlq_threshold=10, spool_threshold=100, grace_s=grace,
                       clock=clock)


def titles(notices: list) -> list[str]:
    return [n.title for n in notices]


def test_redis_outage_is_announced_after_the_grace_then_recovery_once() -> None:
    c = Clock()
    p = policy(c)
    assert p.observe(OK) == []
    assert p.observe(REDIS_DOWN) == []          # a blip is not worth a popup
    c.advance(1.0)
    assert p.observe(REDIS_DOWN) == []
    c.advance(1.5)
    [n] = p.observe(REDIS_DOWN)
    # nothing is lost (events are spooled): a warning, with the tray's warning icon
    assert (n.kind, n.title, n.urgency, n.recovery) == (K_REDIS, "Redis unreachable", "normal", False)
    assert n.icon_state == "degraded"
    assert "1,204 events spooled" in n.message
    for _ in range(10):                          # still down: no repeats
        c.advance(60)
        assert p.observe(REDIS_DOWN) == []
    [r] = p.observe(OK)
    assert (r.title, r.recovery, r.urgency, r.icon_state) == ("Redis reachable again", True, "low", "running")
    assert p.observe(OK) == []                   # recovery announced once


def test_a_blip_shorter_than_the_grace_makes_no_noise_at_all() -> None:
    c = Clock()
    p = policy(c)
    p.observe(REDIS_DOWN)
    c.advance(1.0)
    assert p.observe(OK) == []                   # no failure announced -> no recovery either


def test_each_kind_at_most_once_per_interval_flapping() -> None:
    c = Clock()
    p = policy(c, interval=300, grace=0)
    assert titles(p.observe(REDIS_DOWN)) == ["Redis unreachable"]
    c.advance(10)
    assert titles(p.observe(OK)) == ["Redis reachable again"]
    c.advance(10)
    assert p.observe(REDIS_DOWN) == []           # within the interval: suppressed
    c.advance(10)
    assert p.observe(OK) == []                   # that outage was not announced: no recovery
    c.advance(10)
    assert p.observe(REDIS_DOWN) == []
    c.advance(300)                               # still down when the interval ends: announced now
    assert titles(p.observe(REDIS_DOWN)) == ["Redis unreachable"]
    assert titles(p.observe(OK)) == ["Redis reachable again"]


def test_kinds_are_limited_independently() -> None:
    c = Clock()
    p = policy(c, grace=0)
    assert titles(p.observe(REDIS_DOWN)) == ["Redis unreachable"]
    assert titles(p.observe(db_down("disk_full"))) == ["Redis reachable again",
                                                      "Database writes failing: disk full"]


def test_database_failure_messages_and_change_of_cause() -> None:
    c = Clock()
    p = policy(c, interval=60, grace=0)
    [n] = p.observe(db_down("locked"))
    assert (n.kind, n.title) == (K_DATABASE, "Database writes failing: locked by another program")
    assert (n.urgency, n.icon_state) == ("critical", "error")   # events are not being stored
    assert "will be stored" in n.message
    c.advance(5)
    assert p.observe(db_down("disk_full")) == []  # new cause, but within the interval
    c.advance(60)
    assert titles(p.observe(db_down("disk_full"))) == ["Database writes failing: disk full"]
    c.advance(60)
    assert p.observe(db_down("disk_full")) == []  # same cause: told already
    for kind, text in [("read_only", "read-only"), ("corrupt", "file is corrupt"), ("io", "I/O error")]:
        q = policy(Clock(), grace=0)
        assert titles(q.observe(db_down(kind))) == [f"Database writes failing: {text}"]
    [r] = p.observe(OK)
    assert (r.title, r.recovery) == ("Database writes recovered", True)


def test_dead_letters_warn_past_threshold_and_while_growing() -> None:
    c = Clock()
    p = policy(c, interval=100)
    assert p.observe(HealthSnapshot(state=RUNNING, redis_ok=True, dlq_length=9)) == []
    [n] = p.observe(HealthSnapshot(state=RUNNING, redis_ok=True, dlq_length=10))
    assert (n.kind, n.title) == (K_DLQ, "10 dead letters")
    c.advance(50)
    assert p.observe(HealthSnapshot(state=RUNNING, redis_ok=True, dlq_length=30)) == []  # limited
    c.advance(60)
    assert titles(p.observe(HealthSnapshot(state=RUNNING, redis_ok=True, dlq_length=30))) == ["30 dead letters"]
    c.advance(500)
    assert p.observe(HealthSnapshot(state=RUNNING, redis_ok=True, dlq_length=30)) == []  # not growing
    # retried away, then back past the threshold: a new warning
    assert p.observe(HealthSnapshot(state=RUNNING, redis_ok=True, dlq_length=0)) == []
    c.advance(100)
    assert titles(p.observe(HealthSnapshot(state=RUNNING, redis_ok=True, dlq_length=11))) == ["11 dead letters"]


def test_spool_growth_warning() -> None:
    c = Clock()
    p = policy(c, interval=100, grace=0)
    snap = HealthSnapshot(state=RUNNING, redis_ok=True, spool_files=150)
    [n] = p.observe(snap)
    assert (n.kind, n.title) == (K_SPOOL, "Spool growing: 150 events waiting")
    assert "nothing is lost" in n.message


def test_starting_and_stopped_are_not_outages() -> None:
    c = Clock()
    p = policy(c, grace=0)
    assert p.observe(HealthSnapshot(state=STARTING, redis_ok=False, redis_status="unknown")) == []
    c.advance(100)
    assert p.observe(HealthSnapshot(state=STARTING, redis_ok=False)) == []
    assert p.observe(HealthSnapshot(state=STOPPED, redis_ok=False)) == []


def test_zero_interval_still_announces_recovery_once() -> None:
    c = Clock()
    p = policy(c, interval=0, grace=0)
    assert len(p.observe(REDIS_DOWN)) == 1
    assert p.observe(REDIS_DOWN) == []
    assert len(p.observe(OK)) == 1 and p.observe(OK) == []


def test_spool_is_quiet_while_redis_is_down_and_after_it_drains() -> None:
    c = Clock()
    p = policy(c, interval=100, grace=0)
    down = HealthSnapshot(state=DEGRADED, redis_ok=False, redis_status="refused", spool_files=500)
    assert titles(p.observe(down)) == ["Redis unreachable"]   # one notice, which names the spool
    c.advance(200)
    assert p.observe(HealthSnapshot(state=DEGRADED, redis_ok=False, spool_files=900)) == []
    # back up and draining: no "spool growing" for a shrinking spool
    assert titles(p.observe(HealthSnapshot(state=RUNNING, redis_ok=True, spool_files=800))) == \
        ["Redis reachable again"]
    c.advance(200)
    assert p.observe(HealthSnapshot(state=RUNNING, redis_ok=True, spool_files=400)) == []
    # growing past what it reached while Redis was down, with Redis up: worth a warning
    assert titles(p.observe(HealthSnapshot(state=RUNNING, redis_ok=True, spool_files=950))) == \
        ["Spool growing: 950 events waiting"]


# ----------------------------------------------------------------------------- the private server

SERVER_OK = HealthSnapshot(state=RUNNING, redis_ok=True, redis_status="ok", server_status="ok")


def server(status: str = "ok", restarts: int = 0, redis_ok: bool = True) -> HealthSnapshot:
    return HealthSnapshot(state=RUNNING if redis_ok else DEGRADED, redis_ok=redis_ok,
                          redis_status="ok" if redis_ok else "Connection refused",
                          server_status=status, server_restarts=restarts)


def test_a_quick_restart_of_the_private_server_is_one_notice() -> None:
    """SIGKILL of the private server: the engine loses Redis, the runtime restarts
    the server within a second, the engine reconnects a few seconds later. One
    notice says so, not "unreachable" + "reachable again" + "restarted"."""
    c = Clock()
    p = policy(c)
    assert p.observe(SERVER_OK) == []
    assert p.observe(server(redis_ok=False)) == []                 # the engine noticed first
    c.advance(1)
    [n] = p.observe(server(restarts=1, redis_ok=False))            # the runtime restarted it
    assert (n.kind, n.title, n.recovery, n.urgency) == (K_SERVER, "Redis server restarted", True, "low")
    assert "1 restart since" in n.message
    for _ in range(5):                                             # reconnecting: past the grace
        c.advance(1)
        assert p.observe(server(restarts=1, redis_ok=False)) == []
    assert p.observe(server(restarts=1)) == []                     # reconnected: nothing more
    c.advance(600)
    assert titles(p.observe(server(restarts=2))) == ["Redis server restarted"]
    assert p.observe(server(restarts=2)) == []


def test_a_server_that_stays_down_is_announced_then_its_return() -> None:
    c = Clock()
    p = policy(c)
    p.observe(SERVER_OK)
    down = server("down: restart failed (1x); next attempt in 2 s", redis_ok=False)
    assert p.observe(down) == []
    c.advance(2.5)
    [n] = p.observe(down)
    assert (n.kind, n.title, n.urgency, n.icon_state) == (K_SERVER, "Redis server stopped", "normal", "degraded")
    assert "restart failed" in n.message and "spooled" in n.message
    for _ in range(10):                   # still down; "Redis unreachable" is covered by this notice
        c.advance(30)
        assert p.observe(server("down: restart failed (4x); next attempt in 8 s", redis_ok=False)) == []
    [r] = p.observe(server(restarts=1))
    assert (r.title, r.recovery) == ("Redis server restarted", True)
    assert p.observe(server(restarts=1)) == []


def test_restart_notices_are_limited_per_interval_in_a_crash_loop() -> None:
    c = Clock()
    p = policy(c, interval=300)
    assert titles(p.observe(server(restarts=1))) == ["Redis server restarted"]
    for n in range(2, 6):
        c.advance(20)
        assert p.observe(server(restarts=n)) == []
    c.advance(300)
    [n] = p.observe(server(restarts=5))   # the count says how many there were
    assert "5 restarts since" in n.message


def test_an_outage_long_after_a_restart_is_a_redis_outage() -> None:
    c = Clock()
    p = policy(c)
    assert titles(p.observe(server(restarts=1))) == ["Redis server restarted"]
    c.advance(3600)
    p.observe(server(restarts=1, redis_ok=False))
    c.advance(3)
    assert titles(p.observe(server(restarts=1, redis_ok=False))) == ["Redis unreachable"]


def test_thread_restarts_are_announced_once_per_failure() -> None:
    c = Clock()
    p = policy(c, interval=300)
    assert p.observe(OK) == []
    died = replace(OK, thread_errors=("consumer: TypeError: Recursion limit reached (restarting)",))
    [n] = p.observe(died)
    assert (n.kind, n.title, n.urgency) == (K_THREADS, "Engine thread died: consumer", "normal")
    assert "Recursion limit reached" in n.message and "Restarted automatically" in n.message
    c.advance(60)
    # the same failure, restarted, then again: not news
    for state in ("restarted 1 time", "restarting", "restarted 2 times"):
        again = replace(died, thread_errors=(f"consumer: TypeError: Recursion limit reached ({state})",))
        assert p.observe(again) == []
    # another thread dies within the interval: held back, then told
    both = replace(again, thread_errors=(*again.thread_errors, "maintenance: OSError: boom (restarted 1 time)"))
    assert p.observe(both) == []
    c.advance(300)
    assert titles(p.observe(both)) == ["Engine thread died: maintenance"]
    assert p.observe(both) == []
    # a part that could not start at all (no restart): said as such
    c.advance(300)
    broken = replace(both, thread_errors=(*both.thread_errors, "monitors: could not start: ImportError: x"))
    [m] = p.observe(broken)
    assert m.title == "Not running: monitors" and "Ingest goes on without it" in m.message


def test_a_recovery_message_is_announced_once() -> None:
    c = Clock()
    p = policy(c)
    msg = "corrupt append-only file set aside in /x/data/redis/corrupt-20261202-0941 (kept: 120 events)"
    starting = HealthSnapshot(state=STARTING)
    [n] = p.observe(starting, server_recovery=msg)   # even before the engine runs
    assert (n.kind, n.title, n.message) == (K_RECOVERY, "Redis data set aside", msg)
    assert p.observe(OK, server_recovery=msg) == []
    other = msg.replace("0941", "1002")
    assert titles(p.observe(OK, server_recovery=other)) == ["Redis data set aside"]


def test_a_dont_record_window_ending_by_itself_is_announced_once() -> None:
    p = AlertPolicy(300, 10, 100)
    t0 = 1_800_000_000.0
    timed = (t0, t0 + 1800)
    assert p.recording(None, t0 - 1) == []
    assert p.recording(timed, t0) == [] and p.recording(timed, t0 + 1799) == []
    notices = p.recording(None, t0 + 1800)
    assert [(n.kind, n.title, n.recovery) for n in notices] == [(K_RECORDING, "Recording again", True)]
    assert p.recording(None, t0 + 1801) == []                 # once
    # ended early by the user ("Record again", `telemetry-tray resume`): they know
    p.recording((t0 + 2000, t0 + 3800), t0 + 2000)
    assert p.recording(None, t0 + 2100) == []
    # replaced by another window, or "until I resume" ended: nothing either
    p.recording((t0 + 3000, t0 + 4800), t0 + 3000)
    assert p.recording((t0 + 3100, None), t0 + 3100) == []
    assert p.recording(None, t0 + 9000) == []


NEAR_CAP = replace(OK, storage_state="near_cap",
                   storage_warning="Database at 92% of its 2.0 GB cap: the oldest raw events are being removed")
DISK_LOW = replace(OK, storage_state="disk_low",
                   storage_warning="Disk nearly full: 812.0 MB free (3%) where the database is")


def test_storage_warning_is_announced_once_per_episode_then_its_end() -> None:
    c = Clock()
    p = policy(c, interval=0.0)  # no rate limit: only the episode rule keeps it to one notice
    assert p.observe(NEAR_CAP) == []  # the grace
    c.advance(2.5)
    [n] = p.observe(NEAR_CAP)
    assert (n.kind, n.title, n.urgency, n.icon_state) == (K_STORAGE, "Database at 92% of its 2.0 GB cap",
                                                          "normal", "degraded")
    assert "max_db_mb" in n.message and "92%" in n.message
    for _ in range(5):
        c.advance(60)
        assert p.observe(NEAR_CAP) == []  # still the same episode
    c.advance(1)
    [r] = p.observe(OK)
    assert r.recovery and r.kind == K_STORAGE and r.title == "Storage back to normal"
    assert p.observe(OK) == []
    # a new episode, of the other kind, is news again
    p.observe(DISK_LOW)
    c.advance(2.5)
    [n] = p.observe(DISK_LOW)
    assert n.title == "Disk nearly full" and "Free some space" in n.message


def test_storage_change_of_cause_is_announced_and_a_blip_is_not() -> None:
    c = Clock()
    p = policy(c, interval=0.0)
    p.observe(NEAR_CAP)
    c.advance(1)
    assert p.observe(OK) == []  # gone within the grace: never announced, no recovery either
    p.observe(NEAR_CAP)
    c.advance(2.5)
    assert titles(p.observe(NEAR_CAP)) == ["Database at 92% of its 2.0 GB cap"]
    c.advance(5)
    assert titles(p.observe(DISK_LOW)) == ["Disk nearly full"]
