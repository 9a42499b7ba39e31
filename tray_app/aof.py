"""The private server's append-only file: check it, and salvage a corrupt one.

Valkey (7+) keeps its append-only file as a directory (``appendonlydir``) with
a manifest naming a base file (RDB, or commands) and incremental files of
commands in RESP. A file that valkey cannot parse stops it at start ("Bad file
format ... use valkey-check-aof --fix", a tool we do not ship). Here:

* ``check(data_dir)``: what is wrong with the files, without a server (doctor);
* ``set_aside(data_dir)``: move the files to ``corrupt-<UTC time>/`` (never
  deleted) and put back what can still be read: the base, and the incremental
  files up to the last complete command before the damage (outside a
  MULTI/EXEC). Events after the damage stay only in the set-aside copy;
  replaying bytes after garbage could run commands that were never issued
  (a prompt's text could look like RESP), so nothing past it is kept.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

AOF_DIRNAME = "appendonlydir"
MANIFEST = "appendonly.aof.manifest"
RDB_NAMES = ("dump.rdb",)


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    seq: int
    kind: str  # "b" base, "h" history (not loaded), "i" incremental


@dataclass(frozen=True)
class Damage:
    """One file that does not load as it is."""

    path: Path
    offset: int  # bytes that parse (complete commands)
    size: int
    reason: str
    #: the file only ends mid-command (valkey loads the rest when it is the last file)
    truncated: bool

    def describe(self) -> str:
        what = "ends mid-command" if self.truncated else f"is corrupt ({self.reason})"
        return f"{self.path.name} {what} at byte {self.offset} of {self.size}"


class ManifestError(ValueError):
    pass


def read_manifest(aof_dir: Path) -> list[ManifestEntry]:
    """The manifest's entries. Raises ManifestError (or OSError) when unreadable."""
    text = (aof_dir / MANIFEST).read_bytes().decode("utf-8", "strict")
    entries: list[ManifestEntry] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if len(words) % 2:
            raise ManifestError(f"{MANIFEST}: malformed line {line[:60]!r}")
        fields = dict(zip(words[::2], words[1::2], strict=True))
        try:
            entry = ManifestEntry(fields["file"].strip('"'), int(fields["seq"]), fields["type"])
        except (KeyError, ValueError):
            raise ManifestError(f"{MANIFEST}: malformed line {line[:60]!r}") from None
        if entry.kind not in ("b", "h", "i") or "/" in entry.name or entry.name in (".", ".."):
            raise ManifestError(f"{MANIFEST}: malformed line {line[:60]!r}")
        entries.append(entry)
    if not entries:
        raise ManifestError(f"{MANIFEST}: no files listed")
    return entries


def scan_commands(data: bytes) -> tuple[int, str | None, bool]:
    """(end of the last complete command outside MULTI/EXEC, reason or None, truncated).

    ``reason`` is None when the whole of ``data`` parses; ``truncated`` is
    True when the only problem is that the data ends mid-command."""
    n = len(data)
    pos = 0
    good = 0
    in_multi = False
    crlf = b"\r\n"

    def stop(reason: str, truncated: bool) -> tuple[int, str | None, bool]:
        return good, reason, truncated

    while pos < n:
        if data[pos] == 0x23:  # "#": an annotation line (e.g. #TS:...)
            end = data.find(crlf, pos)
            if end < 0:
                return stop("an annotation cut short", True)
            pos = end + 2
            if not in_multi:
                good = pos
            continue
        if data[pos] != 0x2A:  # "*"
            return stop(f"expected a command, found byte {data[pos]:#04x}", False)
        end = data.find(crlf, pos, pos + 24)
        if end < 0:
            return stop("a command header cut short", True) if n - pos < 24 else \
                stop("a malformed command header", False)
        try:
            argc = int(data[pos + 1:end])
        except ValueError:
            return stop("a malformed command header", False)
        if argc < 1:
            return stop("a malformed command header", False)
        p = end + 2
        name = b""
        for i in range(argc):
            if p >= n:
                return stop("a command cut short", True)
            if data[p] != 0x24:  # "$"
                return stop(f"expected an argument, found byte {data[p]:#04x}", False)
            e = data.find(crlf, p, p + 24)
            if e < 0:
                return stop("an argument cut short", True) if n - p < 24 else \
                    stop("a malformed argument length", False)
            try:
                size = int(data[p + 1:e])
            except ValueError:
                return stop("a malformed argument length", False)
            if size < 0:
                return stop("a malformed argument length", False)
            if e + 2 + size + 2 > n:
                return stop("an argument cut short", True)
            if data[e + 2 + size:e + 4 + size] != crlf:
                return stop("an argument of the wrong length", False)
            if i == 0:
                name = data[e + 2:e + 2 + size].upper()
            p = e + 4 + size
        pos = p
        if name == b"MULTI":
            in_multi = True
        elif name == b"EXEC":
            in_multi = False
        if not in_multi:
            good = pos
    if in_multi:
        return stop("a transaction without EXEC", True)
    return n, None, False


def _check_rdb(data: bytes) -> str | None:
    if not data.startswith(b"REDIS") or len(data) < 9 + 9:
        return "not an RDB file"
    if data[-9] != 0xFF:  # EOF opcode, then the 8-byte checksum
        return "an RDB file cut short"
    return None


def _ordered(entries: list[ManifestEntry]) -> list[ManifestEntry]:
    """What valkey loads, in order: the base, then the incremental files by seq."""
    bases = [e for e in entries if e.kind == "b"]
    incr = sorted((e for e in entries if e.kind == "i"), key=lambda e: e.seq)
    return bases[-1:] + incr


def check(data_dir: Path) -> list[Damage]:
    """What would stop (or trim) loading the data in ``data_dir``. [] when it loads."""
    aof_dir = data_dir / AOF_DIRNAME
    if not aof_dir.is_dir():
        return []
    try:
        entries = _ordered(read_manifest(aof_dir))
    except FileNotFoundError:
        return []  # valkey starts a new one
    except (OSError, ValueError) as exc:
        return [Damage(aof_dir / MANIFEST, 0, _size(aof_dir / MANIFEST), str(exc), False)]
    out: list[Damage] = []
    for entry in entries:
        path = aof_dir / entry.name
        try:
            data = path.read_bytes()
        except OSError as exc:
            out.append(Damage(path, 0, 0, f"cannot be read ({exc.strerror or exc})", False))
            continue
        if entry.kind == "b" and data.startswith(b"REDIS"):
            problem = _check_rdb(data)
            if problem:
                out.append(Damage(path, 0, len(data), problem, False))
            continue
        good, reason, truncated = scan_commands(data)
        if reason is not None:
            # a cut-short tail is loaded anyway (aof-load-truncated) only in the last file
            out.append(Damage(path, good, len(data), reason, truncated and entry is entries[-1]))
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _private_copy(src: Path, dst: Path, limit: int | None = None) -> None:
    with open(src, "rb") as fin:
        data = fin.read() if limit is None else fin.read(limit)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fout:
        fout.write(data)
        fout.flush()
        os.fsync(fout.fileno())


def aside_dir(data_dir: Path) -> Path:
    """A new ``corrupt-<UTC time>`` directory (0700) in ``data_dir``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for i in range(100):
        candidate = data_dir / (f"corrupt-{stamp}" + (f"-{i}" if i else ""))
        try:
            os.mkdir(candidate, 0o700)
            return candidate
        except FileExistsError:
            continue
    raise OSError(f"{data_dir}: cannot make a corrupt-{stamp} directory")


def set_aside(data_dir: Path, salvage: bool = True) -> tuple[Path, str]:
    """Move the append-only directory (and any RDB file) to a new
    ``corrupt-<time>/`` directory and, with ``salvage``, put back the part
    that loads. Returns (that directory, what was kept: one line)."""
    aside = aside_dir(data_dir)
    aof_dir = data_dir / AOF_DIRNAME
    moved = False
    if aof_dir.exists():
        os.replace(aof_dir, aside / AOF_DIRNAME)
        moved = True
    for name in RDB_NAMES:
        if (data_dir / name).exists():
            os.replace(data_dir / name, aside / name)
            moved = True
    if not moved:
        return aside, "nothing to set aside"
    if not salvage:
        return aside, "started empty"
    try:
        kept = _salvage(aside / AOF_DIRNAME, aof_dir)
    except (OSError, ValueError) as exc:
        shutil.rmtree(aof_dir, ignore_errors=True)  # our partial copy only; the originals are aside
        return aside, f"started empty (nothing could be salvaged: {exc})"
    return aside, kept


def _salvage(src: Path, dst: Path) -> str:
    entries = read_manifest(src)
    base = [e for e in entries if e.kind == "b"][-1:]
    incr = sorted((e for e in entries if e.kind == "i"), key=lambda e: e.seq)
    os.mkdir(dst, 0o700)
    keep: list[ManifestEntry] = []
    notes: list[str] = []
    for entry in base:
        data = (src / entry.name).read_bytes()
        problem = _check_rdb(data) if data.startswith(b"REDIS") else scan_commands(data)[1]
        if problem:
            notes.append(f"{entry.name} dropped ({problem})")
        else:
            _private_copy(src / entry.name, dst / entry.name)
            keep.append(entry)
    for entry in incr:
        data = (src / entry.name).read_bytes()
        good, reason, _ = scan_commands(data)
        if reason is None:
            _private_copy(src / entry.name, dst / entry.name)
            keep.append(entry)
            continue
        _private_copy(src / entry.name, dst / entry.name, limit=good)
        keep.append(entry)
        notes.append(f"{entry.name} kept up to byte {good} of {len(data)} ({reason}); "
                     f"events written after that are only in the copy set aside")
        break
    if not keep:
        os.rmdir(dst)
        return "started empty (no file could be read)"
    lines = "".join(f"file {e.name} seq {e.seq} type {e.kind}\n" for e in keep)
    fd = os.open(dst / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(lines)
        fh.flush()
        os.fsync(fh.fileno())
    return "started with the readable part: " + ("; ".join(notes) or "every file")
