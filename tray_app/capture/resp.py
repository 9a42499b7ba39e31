"""Just enough of the Redis protocol (RESP2) for the hook: AUTH, SELECT, XADD.

``_socket`` instead of ``socket`` (0.3 ms instead of 7 ms to import under
``python -I -S``). Every step runs against one deadline: the whole exchange
takes at most ``timeout_s``, whether the server refuses, is missing, or
accepts the connection and never answers. The commands are pipelined, so a
successful XADD costs one round trip.

Standard library only; loaded as a top-level module by hook.py.
"""

import _socket
import time


class RespError(Exception):
    """The exchange failed; the event must go to the spool instead."""


def _unquote(text):
    """Percent-decoding (urllib.parse imports re: too slow for the hook)."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    raw = text.encode("utf-8", "surrogateescape")
    while i < len(raw):
        if raw[i] == 0x25 and i + 2 < len(raw):
            try:
                out.append(int(raw[i + 1:i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return out.decode("utf-8", "replace")


def parse_url(url):
    """(kind, address, username, password, db) for redis://, unix:// URLs.

    kind is "tcp" (address = (host, port)) or "unix" (address = path).
    rediss:// (TLS) raises RespError: TLS would cost more than the hook's
    whole budget, so such events are spooled and the engine sends them."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise RespError(f"not a URL: {url[:40]!r}")
    scheme = scheme.lower()
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    params = {}
    for part in query.split("&"):
        if part:
            k, _, v = part.partition("=")
            params[k] = _unquote(v)
    username = password = None
    if scheme == "unix":
        netloc, slash, path = rest.partition("/")
        path = slash + path
        if "@" in netloc:
            userinfo = netloc.rpartition("@")[0]
            user, colon, pw = userinfo.partition(":")
            username, password = _unquote(user) or None, (_unquote(pw) if colon else None)
        if not path:
            raise RespError("unix URL without a socket path")
        password = params.get("password", password)
        username = params.get("username", username)
        return "unix", _unquote(path), username, password, int(params.get("db", "0") or 0)
    if scheme == "rediss":
        raise RespError("rediss:// (TLS) is left to the engine")
    if scheme != "redis":
        raise RespError(f"unsupported scheme {scheme!r}")
    netloc, _, path = rest.partition("/")
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, pw = userinfo.partition(":")
        username, password = _unquote(user) or None, (_unquote(pw) if colon else None)
    if netloc.startswith("["):  # [::1]:6379
        host, _, port = netloc[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = netloc.partition(":")
    db = path.strip("/") or params.get("db", "0") or "0"
    return "tcp", (host or "localhost", int(port or 6379)), username, password, int(db)


def command(*args):
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8", "replace")
        out.append(b"$%d\r\n" % len(arg))
        out.append(arg)
        out.append(b"\r\n")
    return b"".join(out)


def private_socket_problem(path):
    """Why the hook must not connect to the unix socket ``path`` (it would send
    the password and the event), or None: its directory must be a real
    directory (lstat: not a symlink) owned by this user with mode 0700, and
    the socket itself a socket of this user. Same rule as the app's
    tray_app.paths.private_dir_problem."""
    import posix

    directory = path.rpartition("/")[0] or "/"
    try:
        st = posix.lstat(directory)
    except OSError:
        return "socket directory missing"
    uid = posix.getuid()
    if st.st_mode & 0o170000 != 0o040000:
        return "socket directory is not a directory"
    if st.st_uid != uid:
        return "socket directory belongs to another user"
    if st.st_mode & 0o077:
        return "socket directory is open to other users"
    try:
        st = posix.lstat(path)
    except OSError:
        return "no socket"
    if st.st_mode & 0o170000 != 0o140000 or st.st_uid != uid:
        return "not a socket of this user"
    return None


def _connect(kind, address, timeout_s):
    if kind == "unix":
        problem = private_socket_problem(address)
        if problem:
            raise RespError(f"{problem}: {address}")
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        target = address
    else:
        host, port = address
        if host.isascii():
            host = host.encode()  # a str host goes through the "idna" codec: +6 ms (it imports re)
        infos = _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM)
        if not infos:
            raise RespError(f"cannot resolve {host!r}")
        family, socktype, proto, _, target = infos[0]
        sock = _socket.socket(family, socktype, proto)
    sock.settimeout(timeout_s)
    try:
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


def _read_replies(sock, count, deadline):
    """Read ``count`` replies; return them as (kind_byte, payload) pairs.

    Only the replies our commands produce occur: +simple, -error, :integer
    and $bulk (XADD's entry id)."""
    buf = b""
    replies = []
    pos = 0

    def more(buf):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RespError("timed out waiting for Redis")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise RespError("Redis closed the connection")
        return buf + chunk

    while len(replies) < count:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            buf = more(buf)
            continue
        kind, line = buf[pos:pos + 1], buf[pos + 1:end]
        if kind != b"$":
            replies.append((kind, line))
            pos = end + 2
            continue
        size = int(line)
        if size < 0:  # nil
            replies.append((kind, None))
            pos = end + 2
        elif len(buf) < end + 2 + size + 2:
            buf = more(buf)
        else:
            replies.append((kind, buf[end + 2:end + 2 + size]))
            pos = end + 2 + size + 2
    return replies


def xadd(url, password, stream, fields, timeout_s):
    """XADD ``fields`` (a list of alternating names and values) to ``stream``.

    Returns the new entry id (bytes). Raises RespError or OSError on any
    failure, within ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    kind, address, username, url_password, db = parse_url(url)
    if password is None:
        password = url_password
    commands = []
    if password:
        commands.append(command("AUTH", username, password) if username else command("AUTH", password))
    if db:
        commands.append(command("SELECT", str(db)))
    commands.append(command("XADD", stream, "*", *fields))
    sock = _connect(kind, address, timeout_s)
    try:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RespError("timed out connecting to Redis")
        sock.settimeout(remaining)
        sock.sendall(b"".join(commands))
        replies = _read_replies(sock, len(commands), deadline)
    finally:
        sock.close()
    for rkind, line in replies:
        if rkind == b"-":
            raise RespError(line.decode("utf-8", "replace")[:200])
    rkind, entry_id = replies[-1]
    if rkind != b"$" or not entry_id:
        raise RespError("unexpected reply to XADD")
    return entry_id
