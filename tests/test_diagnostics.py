"""Diagnostics bundle: what a support person receives, and what must never be in it.

The canary test plants distinctive secrets and prompt text in every source the
bundle reads (config, raw_traces, the event stream, the DLQ, health, logs,
Cursor's state.vscdb, hook settings, the spool, the environment) and then
searches every file of the zip for them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import zipfile
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from conftest import RedisProc, run_cli
from tray_app.config import load_config
from tray_app.engine.health import HealthSnapshot
from tray_app.engine.schema import LATEST, open_database
from tray_app.redis_conn import DLQ_STREAM, EVENTS_STREAM, HEALTH_KEY, ensure_streams
from tray_app.diagnostics.bundle import bundle_name, default_out_dir, export_bundle
from tray_app.diagnostics.redact import Redactor

# --------------------------------------------------------------------------- canaries

PW = "CanaryRedisPw9e1"                       # Redis password in the config url
PROMPT = "please refactor the payments module canaryprompt5521 and keep tests green"
RESPONSE = "Sure: here is canaryresponse3317 the refactored module"
FILE_TEXT = "API_SECRET = 'canaryfilecontent8842'"
SHELL_OUT = "total 0 canaryshelloutput6610"
CURSOR_TOKEN = "eyCanaryCursorAccessToken0a9f88d1"
CURSOR_REFRESH = "canarycursorrefresh77c1"
CURSOR_PROMPT = "cursor prompt canarycursorprompt4410 with words"
ENV_KEY = "CanaryEnvKey2231plainvalue"
ENV_PLAIN = "canaryplainenv6071"
LOG_TOKEN = "canarylogtoken1299"
BEARER = "canarybearer8321xyz"
DLQ_PROMPT = "dead letter prompt canarydlqprompt3390 about invoices"
USER_HOOK_TOKEN = "canaryuserhooktoken5150"
SPOOL_PROMPT = "spooled canaryspoolprompt7003"
# each of these is stopped by one layer only (the others are caught twice over)
STREAM_ONLY = "queued canarystreamonly4242 words"     # XINFO first/last entry stripped to ids
LOG_JSON_ONLY = "canarylogjsononly1717 in a dump"     # content-field pattern in log lines
OTHER_URL_PW = "canaryotherurlpw3434"                 # URL password pattern (not a known secret)
STATE_ONLY = "offset note canarystateonly2525 words"  # monitor state reduced by shape

CANARIES = ["CanaryRedisPw9e1", "canaryprompt5521", "canaryresponse3317", "canaryfilecontent8842",
            "canaryshelloutput6610", "CanaryCursorAccessToken0a9f88d1", "canarycursorrefresh77c1",
            "canarycursorprompt4410", "canaryenvkey2231", "canaryplainenv6071", "canarylogtoken1299",
            "canarybearer8321", "canarydlqprompt3390", "canaryuserhooktoken5150", "canaryspoolprompt7003",
            "canarystreamonly4242", "canarylogjsononly1717", "canaryotherurlpw3434", "canarystateonly2525"]


def _event(i: int, *, platform: str = "claude_code", event_type: str = "user_prompt",
           ts: datetime | None = None, payload: dict | None = None) -> dict:
    ts = ts or datetime.now(timezone.utc)
    return {
        "event_id": f"00000000-0000-7000-8000-{i:012d}",
        "platform": platform, "event_type": event_type,
        "timestamp": ts.isoformat().replace("+00:00", "Z"),
        "session_id": f"sess-{i % 3}", "hook_type": "UserPromptSubmit",
        "workspace_hash": "0123456789abcdef",
        "payload": payload or {"prompt": PROMPT},
        "metadata": {"source": "claude_hook", "cwd": "/work/proj"},
        "schema_version": "1",
    }


def insert_rows(db: Path, events: list[dict]) -> None:
    conn = open_database(db)
    try:
        conn.execute("BEGIN")
        for ev in events:
            conn.execute(
                "INSERT INTO raw_traces (event_id, session_id, external_session_id, event_type, platform, "
                "hook_type, timestamp, workspace_hash, source, stream_id, ingested_at, event_data) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (ev["event_id"], ev["session_id"], None, ev["event_type"], ev["platform"], ev.get("hook_type"),
                 ev["timestamp"], ev.get("workspace_hash"), ev["metadata"]["source"], "1-0",
                 ev["timestamp"], zlib.compress(orjson.dumps(ev))))
        conn.execute("COMMIT")
    finally:
        conn.close()


def dead_letter(ev: dict, reason: str, error: str) -> dict:
    fields = {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in ev.items()}
    fields.update(reason=reason, error=error, delivery_count="1",
                  failed_at="2026-01-02T03:04:05.000Z", consumer="laptop-1", original_id="1-1")
    return fields


def read_zip(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info).decode("utf-8") for info in zf.infolist()}


def part(files: dict[str, str], name: str) -> str:
    (key,) = [k for k in files if k.split("/", 1)[1] == name]
    return files[key]


@pytest.fixture()
def user_home(app_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME is the isolated app home, so every app path lives under the home dir."""
    monkeypatch.setenv("HOME", str(app_home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(app_home / ".config"))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    return app_home


# --------------------------------------------------------------------------- the canary test

@pytest.fixture()
def planted(user_home: Path, server_binary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every source the bundle reads, each with canaries in it."""
    srv = RedisProc(server_binary, tmp_path / "redis-pw", password=PW).start()
    home = user_home
    # config: the Redis url with the password; monitor paths under home
    cfg_file = home / "config" / "config.toml"
    cfg_file.parent.mkdir(parents=True)
    cfg_file.write_text(f'[redis]\nurl = "redis://:{PW}@127.0.0.1:{srv.port}/0"\n'
                        f'[monitors]\nclaude_projects_dirs = ["{home}/work/transcripts"]\n')
    # environment: a secret-named variable and a plain one outside the allowlist
    monkeypatch.setenv("ANTHROPIC_API_KEY", ENV_KEY)
    monkeypatch.setenv("CANARY_PLAIN", ENV_PLAIN)
    monkeypatch.setenv("XDG_CURRENT_DESKTOP", "GNOME")
    cfg = load_config()
    assert cfg.source == str(cfg_file)

    # raw_traces: prompts, responses, file contents, shell output
    now = datetime.now(timezone.utc)
    evs = [_event(1), _event(2, event_type="assistant_response", payload={"response": RESPONSE}),
           _event(3, platform="cursor", event_type="file_edit", payload={"content": FILE_TEXT}),
           _event(4, platform="cursor", event_type="shell_execution", payload={"output": SHELL_OUT},
                  ts=now - timedelta(days=2))]
    insert_rows(cfg.paths.database, evs)

    # Redis: streams, a pending entry with a prompt, dead letters, a health snapshot
    c = srv.client()
    ensure_streams(c)
    c.xadd(EVENTS_STREAM, {k: (json.dumps(v) if isinstance(v, dict) else v)
                           for k, v in _event(9, payload={"q": STREAM_ONLY}).items()})
    c.xadd(DLQ_STREAM, dead_letter(_event(10, payload={"prompt": DLQ_PROMPT}), "invalid_event_type",
                                   "event_type 'x' is not a known type"))
    c.xadd(DLQ_STREAM, {"payload": "{not json " + PROMPT, "reason": "invalid_json",
                        "error": "field 'payload': unexpected character", "delivery_count": "1",
                        "failed_at": "2026-01-02T03:04:05.000Z", "consumer": "laptop-1", "original_id": "1-2"})
    c.xadd(DLQ_STREAM, {b"payload": b"\xff\xfe" + DLQ_PROMPT.encode(), b"reason": b"invalid_utf8",
                        b"error": b"field b'payload': invalid start byte at byte 0"})
    snap = HealthSnapshot(state="degraded", reasons=("Redis unreachable",), total_ingested=4,
                          last_error=f"Redis unreachable at redis://:{PW}@127.0.0.1:{srv.port}/0",
                          updated_at=now.timestamp(),
                          monitors={"claude_transcripts": {"last_pass": "2026-01-01T00:00:00Z",
                                                           "root": f"{home}/.claude/projects"}})
    c.set(HEALTH_KEY, json.dumps(snap.to_dict()), ex=60)
    c.close()

    # logs: secrets and content in the shapes a careless log line would have them
    dashed_home = str(home).strip("/").replace("/", "-")  # Claude Code's project dir naming
    cfg.paths.log_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "2026-01-01 10:00:00 INFO MainThread tray_app.engine: started, 0 pending",
        f"2026-01-01 10:00:01 WARNING MainThread tray_app.redis: reconnecting to redis://:{PW}@127.0.0.1:6379/0",
        f"2026-01-01 10:00:02 DEBUG hook: upstream token={LOG_TOKEN} accepted",
        f"2026-01-01 10:00:03 DEBUG hook: headers {{'Authorization': 'Bearer {BEARER}'}}",
        "2026-01-01 10:00:04 ERROR consumer: bad entry " + json.dumps({"payload": json.dumps({"prompt": PROMPT})}),
        f"2026-01-01 10:00:05 ERROR monitor: could not map {{'response': '{RESPONSE}'}}",
        f"2026-01-01 10:00:06 ERROR consumer: {PROMPT}",
        "2026-01-01 10:00:06 ERROR hook: stdin was " + json.dumps({"prompt": LOG_JSON_ONLY, "n": 1}),
        f"2026-01-01 10:00:06 WARNING app: fallback redis://default:{OTHER_URL_PW}@10.0.0.5:6379 failed",
        f"2026-01-01 10:00:07 DEBUG cursor: read cursorAuth/accessToken {CURSOR_TOKEN}",
        f"2026-01-01 10:00:08 DEBUG env: key {ENV_KEY}",
        f"2026-01-01 10:00:09 INFO watcher: {home}/.claude/projects/-{dashed_home}-proj/a.jsonl",
        "2026-01-01 10:00:10 INFO engine: stopped cleanly",
    ]
    cfg.paths.log_file.write_text("\n".join(lines) + "\n")
    (cfg.paths.log_dir / (cfg.paths.log_file.name + ".1")).write_text(
        f"2026-01-01 09:00:00 INFO old: rotated line with stdout={SHELL_OUT!r}\n")

    # Cursor's database under the fake home: credentials and a prompt
    gdir = home / ".config" / "Cursor" / "User" / "globalStorage"
    gdir.mkdir(parents=True)
    cur = sqlite3.connect(gdir / "state.vscdb")
    cur.execute("CREATE TABLE ItemTable (key TEXT UNIQUE ON CONFLICT REPLACE, value BLOB)")
    cur.executemany("INSERT INTO ItemTable VALUES (?, ?)", [
        ("cursorAuth/accessToken", CURSOR_TOKEN), ("cursorAuth/refreshToken", CURSOR_REFRESH),
        ("aiService.prompts", json.dumps([{"text": CURSOR_PROMPT, "commandType": 4}]))])
    cur.commit()
    cur.close()

    # Claude Code settings with the user's own hook carrying a token
    (home / ".claude").mkdir()
    (home / ".claude" / "settings.json").write_text(json.dumps({"hooks": {"PreToolUse": [
        {"matcher": "*", "hooks": [{"type": "command",
                                    "command": f"curl -H 'Authorization: Bearer {USER_HOOK_TOKEN}' x"}]}]}}))
    (home / ".claude" / "projects").mkdir()

    # a monitor's state store with offsets keyed by transcript path
    store = cfg.paths.state_dir / "monitors" / "claude_transcripts.sqlite3"
    store.parent.mkdir(parents=True)
    st = sqlite3.connect(store)
    st.execute("CREATE TABLE kv (scope TEXT, key TEXT, value BLOB, PRIMARY KEY (scope, key))")
    st.execute("INSERT INTO kv VALUES (?,?,?)", ("offsets", f"{home}/.claude/projects/p/a.jsonl",
                                                  orjson.dumps({"offset": 4096, "inode": 77, "size": 5000})))
    st.execute("INSERT INTO kv VALUES (?,?,?)", ("last_line", "x", orjson.dumps({"line": STATE_ONLY})))
    st.commit()
    st.close()

    # the spool: one waiting event with a prompt
    cfg.paths.spool_dir.mkdir(parents=True, exist_ok=True)
    (cfg.paths.spool_dir / "1767000000000000000-abc.json").write_text(json.dumps({"payload": SPOOL_PROMPT}))

    try:
        yield cfg, srv
    finally:
        srv.stop()
        srv.kill()


def test_bundle_contains_no_canary_and_no_home_path(planted, user_home: Path, tmp_path: Path) -> None:
    cfg, srv = planted
    out = tmp_path / "out"
    path = export_bundle(cfg, out_dir=out)

    assert path.parent == out and path.name.startswith("telemetry-tray-diagnostics-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    files = read_zip(path)
    everything = "\n".join(list(files) + list(files.values()))
    leaked = [c for c in CANARIES if c.lower() in everything.lower()]
    assert not leaked, f"canaries in the bundle: {leaked}"
    for home in {str(user_home), os.path.realpath(user_home)}:
        assert home not in everything
        assert home.strip("/").replace("/", "-") not in everything
    with zipfile.ZipFile(path) as zf:
        assert all(stat.S_IMODE(i.external_attr >> 16) == 0o600 for i in zf.infolist())

    # ...and yet it says what a support person needs
    config = json.loads(part(files, "config.json"))
    assert config["settings"]["redis"]["url"] == f"redis://:***@127.0.0.1:{srv.port}/0"
    assert config["paths"]["database"] == "~/data/telemetry.db"
    env = json.loads(part(files, "environment.json"))["variables"]
    assert env["XDG_CURRENT_DESKTOP"] == "GNOME" and "ANTHROPIC_API_KEY" not in env
    assert env["TELEMETRY_TRAY_HOME"] == "~"

    health = json.loads(part(files, "health.json"))
    assert health["snapshot"]["state"] == "degraded"
    assert health["snapshot"]["last_error"] == f"Redis unreachable at redis://:***@127.0.0.1:{srv.port}/0"

    red = json.loads(part(files, "redis.json"))
    assert red["reachable"] is True
    assert "redis_version" in red["info_server"] or "valkey_version" in red["info_server"]
    assert "used_memory" in red["info_memory"] and "aof_enabled" in red["info_persistence"]
    events = red["streams"][EVENTS_STREAM]
    assert events["stream"]["length"] == 1 and "first-entry-id" in events["stream"]
    assert events["groups"][0]["name"] == "processors"

    dlq = json.loads(part(files, "dlq.json"))
    assert dlq["length"] == 3
    assert dlq["counts_by_reason"] == {"invalid_event_type": 1, "invalid_json": 1, "invalid_utf8": 1}
    first = dlq["first_entries"][0]
    assert first["reason"] == "invalid_event_type" and first["event_id"].endswith("000000000010")
    assert first["payload_bytes"] > 20 and "payload" not in first

    db = json.loads(part(files, "database.json"))
    assert db["rows"] == 4 and db["by_platform"] == {"claude_code": 2, "cursor": 2}
    assert db["quick_check"] == "ok" and db["schema_version"] == LATEST
    assert db["last_days"]["by_event_type"]["shell_execution"] == 1
    assert len(db["last_days"]["by_day"]) == 14

    mon = json.loads(part(files, "monitors.json"))
    assert mon["cursor"]["user_dir"] == "~/.config/Cursor/User" and mon["cursor"]["global_state_vscdb_bytes"] > 0
    kv = mon["state_stores"]["monitors/claude_transcripts.sqlite3"]["kv"]
    offsets = [r for r in kv if r["scope"] == "offsets"][0]
    assert offsets["key"] == "~/.claude/projects/p/a.jsonl" and offsets["state"]["offset"] == 4096
    assert any(r["path"] == "~/work/transcripts" for r in mon["claude_code"]["project_roots"])
    assert mon["live"]["claude_transcripts"] == {"last_pass": "2026-01-01T00:00:00Z", "root": "~/.claude/projects"}

    hooks = json.loads(part(files, "hooks.json"))
    assert set(hooks) >= {"cursor", "claude"}
    assert hooks["claude"]["path"] == "~/.claude/settings.json"
    assert hooks["claude"]["state"] == "not installed"

    spool = json.loads(part(files, "spool.json"))
    assert spool["path"] == "~/state/spool"

    log_text = part(files, "logs/telemetry-tray.log.txt")
    assert "tray_app.engine: started, 0 pending" in log_text and "engine: stopped cleanly" in log_text
    assert "rotated line" in log_text  # continued into telemetry-tray.log.1
    assert "reconnecting to redis://:***@127.0.0.1:6379/0" in log_text
    assert "token=***" in log_text
    assert "~/.claude/projects/" in log_text

    manifest = json.loads(part(files, "manifest.json"))
    assert manifest["version"] and manifest["python"]["version"]
    assert manifest["packages"]["redis"] and "name" in manifest["tray_backend"]
    assert "available" in manifest["notification_backend"]
    assert manifest["cut"] is None and "dlq.json" in manifest["files"]
    assert "README.txt" in manifest["files"]


def test_bundle_is_made_when_redis_is_down(user_home: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", "redis://:hunter2pw@127.0.0.1:1/0")
    cfg = load_config()
    path = export_bundle(cfg, out_dir=tmp_path / "out")
    files = read_zip(path)
    red = json.loads(part(files, "redis.json"))
    assert red["reachable"] is False and "unreachable" in red["error"].lower()
    assert "hunter2pw" not in "".join(files.values())
    assert json.loads(part(files, "dlq.json"))["error"].startswith("Redis not reachable")
    assert json.loads(part(files, "database.json")) == {"path": "~/data/telemetry.db", "exists": False}
    assert json.loads(part(files, "health.json"))["source"] is None


def test_health_given_by_the_caller_is_used(user_home: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", "redis://127.0.0.1:1/0")
    snap = HealthSnapshot(state="paused", total_ingested=1234, consumer="me-1")
    path = export_bundle(load_config(), tmp_path, snap)
    health = json.loads(part(read_zip(path), "health.json"))
    assert health["source"] == "the running app"
    assert health["snapshot"]["state"] == "paused" and health["snapshot"]["total_ingested"] == 1234


def test_size_cap_cuts_oldest_log_lines_and_says_so(user_home: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", "redis://127.0.0.1:1/0")
    cfg = load_config()
    cfg.paths.log_dir.mkdir(parents=True)
    cfg.paths.log_file.write_text("".join(f"2026-01-01 INFO line {i:06d} " + "x" * 200 + "\n"
                                          for i in range(5000)))
    path = export_bundle(cfg, tmp_path / "out", max_bytes=150_000, log_lines=5000)
    files = read_zip(path)
    total = sum(len(v.encode()) for v in files.values())
    assert total <= 150_000 + 16 * 1024
    log_text = part(files, "logs/telemetry-tray.log.txt")
    assert log_text.startswith("[cut: ") and "capped at 150000 bytes" in log_text
    assert "line 004999" in log_text and "line 000000" not in log_text
    manifest = json.loads(part(files, "manifest.json"))
    assert manifest["cut"] and manifest["cut"][0].startswith("logs/telemetry-tray.log.txt")


def test_name_collision_and_default_folder(user_home: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr("tray_app.diagnostics.parts.manifest", lambda: {"app": "x"})
    cfg = load_config()
    now = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    assert bundle_name(now) == "telemetry-tray-diagnostics-20260304T050607Z.zip"
    a = export_bundle(cfg, tmp_path / "o", now=now)
    b = export_bundle(cfg, tmp_path / "o", now=now)
    assert a.name == "telemetry-tray-diagnostics-20260304T050607Z.zip"
    assert b.name == "telemetry-tray-diagnostics-20260304T050607Z-1.zip"
    # no Downloads folder: the home directory; with one: Downloads
    assert default_out_dir() == user_home
    (user_home / "Downloads").mkdir()
    assert default_out_dir() == user_home / "Downloads"


def test_cli_export(user_home: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", "redis://127.0.0.1:1/0")
    env = dict(os.environ)
    # a folder or a .zip's folder that does not exist is a one-line error, never created
    for missing in (tmp_path / "dir", tmp_path / "nonexistent" / "dir" / "x.zip"):
        r = run_cli("diagnostics", "export", "--out", str(missing), env=env)
        assert r.returncode == 64 and r.stderr.strip().count("\n") == 0, r.stderr
        assert "does not exist" in r.stderr or "no such folder" in r.stderr
    assert not (tmp_path / "dir").exists() and not (tmp_path / "nonexistent").exists()
    (tmp_path / "dir").mkdir()
    r = run_cli("diagnostics", "export", "--out", str(tmp_path / "dir"), env=env)
    assert r.returncode == 0, r.stderr
    made = Path(r.stdout.strip())
    assert made.parent == tmp_path / "dir" and zipfile.is_zipfile(made)
    assert stat.S_IMODE(made.stat().st_mode) == 0o600

    r = run_cli("diagnostics", "export", "--out", str(tmp_path / "named.zip"), env=env)
    assert r.returncode == 0 and Path(r.stdout.strip()) == tmp_path / "named.zip"
    r = run_cli("diagnostics", "export", "--out", str(tmp_path / "named.zip"), env=env)
    assert r.returncode == 64
    assert r.stderr.strip().count("\n") == 0 and "already exists" in r.stderr

    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_cli("diagnostics", "export", "--out", str(blocker / "sub"), env=env)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("telemetry-tray: error: ")

    r = run_cli("diagnostics", "export", "--help", env=env)
    assert r.returncode == 0 and "--out" in r.stdout


# --------------------------------------------------------------------------- the redactor

@pytest.mark.parametrize("text, leaked, kept", [
    ("redis://:s3cretpw@host:6379/0", "s3cretpw", "redis://:***@host:6379/0"),
    ("rediss://user:p%40ss@host/0", "p%40ss", "rediss://user:***@host/0"),
    ("unix:///tmp/r.sock?db=0&password=qwerty12", "qwerty12", "password=***"),
    ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678", "Bearer ***"),
    ('{"api_key": "k-123456789"}', "k-123456789", '"api_key": "***"'),
    ("token=abc123def, next", "abc123def", "token=***, next"),
    ("access_token: 'xyz987654'", "xyz987654", "access_token: '***'"),
    ("use sk-ant-abcdefghijklmnop1234", "abcdefghijklmnop1234", "use ***"),
    ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghij", "***"),
    ('x {"prompt": "hello there world"} y', "hello there", '"prompt": "<redacted 17 chars>"'),
    ("x {'stdout': 'rm -rf done'} y", "rm -rf", "'stdout': '<redacted 11 chars>'"),
    ('{"payload": "{\\"text\\": \\"inner secret words\\"}"}', "inner secret", '\\"text\\": \\"<redacted'),
    ('"content": "cut off in the middle', "cut off", '"content": "<redacted'),
])
def test_redactor_patterns(text: str, leaked: str, kept: str) -> None:
    out = Redactor(home="/nonexistent-home").text(text)
    assert leaked not in out and kept in out, out


def test_redactor_keeps_numbers_and_is_idempotent() -> None:
    r = Redactor(home="/nonexistent-home")
    text = '{"input_tokens": 120, "tokens": 5, "secret_count": 2, "prompt": "abc def"}'
    once = r.text(text)
    assert '"input_tokens": 120' in once and '"tokens": 5' in once
    assert r.text(once) == once


def test_redactor_home_boundaries_and_known_values() -> None:
    r = Redactor(home="/home/al")
    assert r.text("/home/al/x and /home/alice/y and /home/al") == "~/x and /home/alice/y and ~"
    assert r.text("-home-al-proj") == "~-proj"
    r.add_secret("pw-1234")
    r.add_content("a long prompt line one\nsecond line of it here")
    out = r.text("x pw-1234 y | second line of it here | pw-1234")
    assert out == "x *** y | <redacted content> | ***"
    # ids, enum words and paths are never treated as content
    r.add_content({"id": "0123456789abcdef", "kind": "assistant_response", "cwd": "/work/some/project"})
    assert r.text("0123456789abcdef assistant_response /work/some/project") == \
        "0123456789abcdef assistant_response /work/some/project"


def test_redactor_log_line_caps_huge_lines() -> None:
    r = Redactor(home="/nonexistent-home")
    line = "INFO start " + "x" * 100_000 + " password=abcdef12"
    out = r.log_line(line, max_chars=200)
    assert len(out) < 260 and out.endswith(f"[line cut: {len(line) - 200} more chars]")
    assert "abcdef12" not in out


def test_redactor_values() -> None:
    r = Redactor(home="/h/u")
    data = {"text": "secret words", "password": "pw1", "count": 3, "path": "/h/u/a", "n": None,
            "list": ["/h/u", {"api_key": "zzz"}]}
    assert r.value(data) == {"text": "<redacted 12 chars>", "password": "***", "count": 3, "path": "~/a",
                             "n": None, "list": ["~", {"api_key": "***"}]}
