"""The hook's work: read stdin, build the event, send it or spool it.

Called by hook.py. While "don't record" is on (norecord.py) the event is
dropped before anything else. Whatever happens, the assistant sees the same thing:
exit code 0, and on stdout ``{}`` for Cursor (a JSON object with no
decision in it) or nothing for Claude Code.

Standard library only; loaded as a top-level module by hook.py.
"""

try:
    import posix as _os
except ImportError:  # Windows
    import nt as _os  # type: ignore[no-redef]

import time as _time  # built in: no import cost

try:
    from . import fastjson, hookconfig, mapping, norecord
except ImportError:
    import fastjson  # type: ignore[no-redef]
    import hookconfig  # type: ignore[no-redef]
    import mapping  # type: ignore[no-redef]
    import norecord  # type: ignore[no-redef]

#: tray_app.redis_conn.EVENTS_STREAM (a test keeps them equal)
EVENTS_STREAM = "telemetry:events"
#: stdin beyond this is read and discarded (the writer must never see EPIPE);
#: [capture] max_input_bytes then caps what is kept
READ_LIMIT = 64 * 1024 * 1024
CURSOR_OUTPUT = b"{}\n"
#: the hook's whole budget, in seconds: whatever happens it has exited by
#: then. The installers give the assistants a timeout well above it
#: (installers.HOOK_TIMEOUT_S), so an assistant never has to kill the hook.
BUDGET_S = 3.0
#: stdin must be closed by then (both assistants close it at once); what
#: arrived is captured, and the rest of the budget is left for delivery
STDIN_WATCHDOG_S = 2.0
#: kept back from the XADD deadline for writing the spool file instead
SPOOL_RESERVE_S = 0.5

_started = _time.monotonic()


class StdinTimeout(Exception):
    """The watchdog fired while stdin was still open."""


def _hard_exit(signum, frame):
    _say(f"gave up after {BUDGET_S:g} s")
    _os._exit(0)


def _interrupt(signum, frame):
    _arm(_hard_exit, BUDGET_S - STDIN_WATCHDOG_S)
    raise StdinTimeout()


def _arm(handler, seconds):
    import _signal  # already loaded by the interpreter

    _signal.signal(_signal.SIGALRM, handler)
    _signal.setitimer(_signal.ITIMER_REAL, max(seconds, 0.001))


def remaining():
    """Seconds left of the budget."""
    return BUDGET_S - (_time.monotonic() - _started)


def arm_watchdog():
    """SIGALRM after STDIN_WATCHDOG_S (POSIX only): interrupts a read of an
    stdin that is never closed, then a hard exit at the end of the budget."""
    try:
        _arm(_interrupt, STDIN_WATCHDOG_S - (_time.monotonic() - _started))
    except (ImportError, AttributeError, ValueError, OSError):
        pass


def arm_deadline():
    """Once stdin is read: a hard exit (code 0) when the budget runs out."""
    try:
        _arm(_hard_exit, remaining())
    except (ImportError, AttributeError, ValueError, OSError):
        pass


def read_stdin(limit=READ_LIMIT):
    """(bytes kept, total bytes seen). Never raises."""
    chunks = []
    kept = 0
    total = 0
    try:
        while True:
            chunk = _os.read(0, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if kept < limit:
                chunks.append(chunk)
                kept += len(chunk)
    except (OSError, StdinTimeout):
        pass
    data = b"".join(chunks)
    if total > limit:
        data = data[:limit]
    return data, total


def _say(message):
    try:
        _os.write(2, f"telemetry-tray hook: {message}\n".encode("utf-8", "replace"))
    except OSError:
        pass


def deliver(fields, settings):
    """Send with XADD, or spool. Returns "sent", "spooled" or "lost"."""
    url, password = hookconfig.endpoint(settings)
    if url:
        try:
            try:
                from . import resp
            except ImportError:
                import resp  # type: ignore[no-redef]
            timeout = min(settings["hook_timeout_ms"] / 1000.0, remaining() - SPOOL_RESERVE_S)
            if timeout > 0:
                resp.xadd(url, password, EVENTS_STREAM, mapping.to_resp_fields(fields), timeout)
                return "sent"
        except Exception:
            pass  # unreachable, refused, hanging, auth: all go to the spool
    try:
        try:
            from . import spoolfile
        except ImportError:
            import spoolfile  # type: ignore[no-redef]
        data = fastjson.dumps(fields).encode("utf-8", "replace")
        spoolfile.write(settings["spool_dir"], fields["event_id"], data)
        return "spooled"
    except Exception as exc:
        _say(f"event {fields.get('event_id')} lost: Redis unreachable and "
             f"cannot write to the spool ({exc})")
        return "lost"


def run(arg, environ=None, supervised=False):
    # "Don't record" first: one stat when it was never used. During a window
    # the event is read (the assistant's write must not fail) and dropped.
    if not norecord.recording_now(hookconfig.resolve(environ)[1]):
        read_stdin(limit=0)
        return "not recorded"
    raw, total = read_stdin()
    if supervised:
        arm_deadline()
    settings = hookconfig.load(environ)
    fields = mapping.build(arg, raw, settings, total_bytes=total)
    if fields is None:  # Cursor running our Claude hook: its Cursor hook has this call
        return "skipped"
    return deliver(fields, settings)


def main(argv):
    """Never raises; the caller exits 0."""
    arg = argv[1] if len(argv) > 1 else ""
    arm_watchdog()
    if arg.strip().lower() == "cursor":
        try:
            _os.write(1, CURSOR_OUTPUT)
        except OSError:
            pass
    try:
        return run(arg, supervised=True)
    except BaseException as exc:  # noqa: BLE001 - the hook must never fail the assistant
        _say(f"internal error: {type(exc).__name__}: {exc}")
        return "lost"
