"""The app's error hierarchy: defined once, translated at the boundary.

Library errors (redis-py, sqlite3, OSError) are converted into these where
they enter our code; the CLI maps each class to a one-line message and an
exit code.
"""

from __future__ import annotations


class TelemetryTrayError(Exception):
    """Base class. ``str(err)`` is the one-line message shown to the user."""

    exit_code = 1


class ConfigError(TelemetryTrayError):
    """The configuration file or an environment override is invalid."""

    exit_code = 78  # EX_CONFIG


class RedisUnavailable(TelemetryTrayError):
    """Redis could not be reached (connection refused, timeout, auth)."""

    exit_code = 69  # EX_UNAVAILABLE


class RedisTooOld(TelemetryTrayError):
    """The server lacks stream features we need (XAUTOCLAIM: >= 6.2)."""

    exit_code = 69


class ServerBinaryNotFound(TelemetryTrayError):
    """No valkey-server / redis-server binary could be found to manage."""

    exit_code = 69


class UnsafeDirectory(TelemetryTrayError):
    """A directory meant for private files (the Redis socket, the password, the
    data) is another user's, readable or writable by others, or a symlink."""

    exit_code = 77  # EX_NOPERM


class DatabaseError(TelemetryTrayError):
    """SQLite failed for a reason that is not the message's fault."""

    exit_code = 74  # EX_IOERR

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        #: short machine-readable cause: locked, disk_full, read_only, corrupt, io, error
        self.kind = kind


class SchemaTooNew(TelemetryTrayError):
    """The database was written by a newer version of the app."""

    exit_code = 65  # EX_DATAERR


class AlreadyRunning(TelemetryTrayError):
    """Another instance holds the single-instance lock."""

    exit_code = 0


class UsageError(TelemetryTrayError):
    """A command was called with arguments that cannot work."""

    exit_code = 64  # EX_USAGE
