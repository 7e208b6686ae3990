"""The SMB backend: a spool or store on a NAS share, spoken to directly with smbprotocol (no
kernel mount), for ``smb://user@host[:port]/share[/path]``.

Credentials never come from the URL or policies.toml: the password is read from the environment
(``DASHSPOOL_SMB_PASSWORD``) or from a cifs-style credentials file named by
``DASHSPOOL_SMB_CREDENTIALS`` (``username=``, ``password=``, optional ``domain=``; mode 600).
They appear in no URL, repr, log line or error message.

Each backend owns its SMB connection and session (a private smbclient connection cache): several
backends in one process do not share a session, and :meth:`SmbBackend.close` ends only its own.
Message signing is required. The session is registered once and registered again after the
connection is lost; an operation that finds the server gone raises StorageUnavailable.

**Exclusive rename.** ``smbclient.rename`` is not an exclusive claim: it opens the source with
full sharing, so two racers can both open it, and the second rename then moves the already
moved file (the handle follows the file) — both "win". Here the source is opened with DELETE
access and *no* sharing, and renamed through that handle (SET_INFO FileRenameInformation,
ReplaceIfExists=False, the target relative to the share root), all in one related compound
request (CREATE + SET_INFO + CLOSE). The server admits one such open at a time: a competitor
gets STATUS_SHARING_VIOLATION while the winner holds it and STATUS_OBJECT_NAME_NOT_FOUND after.
See docs/smb.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, TypeVar, cast
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import smbclient
from smbclient import ClientConfig
from smbclient._io import SMBDirectoryIO, SMBFileTransaction, SMBRawIO, set_info
from smbprotocol.change_notify import CompletionFilter, FileSystemWatcher
from smbprotocol.connection import Connection
from smbprotocol.exceptions import (
    SMBAuthenticationError,
    SMBException,
    SMBOSError,
    SMBResponseException,
)
from smbprotocol.file_info import FileAttributes, FileRenameInformation
from smbprotocol.header import NtStatus
from smbprotocol.open import CreateOptions, FilePipePrinterAccessMask

from watchers.backends.base import Backend, Entry, Kind, Notifier, clean_rel
from watchers.errors import (
    AlreadyExists,
    BadJob,
    ConfigError,
    NotFound,
    StorageUnavailable,
    UnsafePath,
)

log = logging.getLogger(__name__)

PASSWORD_ENV = "DASHSPOOL_SMB_PASSWORD"
CREDENTIALS_ENV = "DASHSPOOL_SMB_CREDENTIALS"
DEFAULT_PORT = 445
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0
IO_CHUNK = 1 << 20  # read/write buffer: 1 MiB per SMB2 READ/WRITE (credits permitting)
# A handle held by another client (a claim in flight, a reader of a file inside a folder being
# renamed) makes an open or rename fail for a moment; retry with these pauses, then give up.
BUSY_RETRY_SECONDS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
sleep = time.sleep  # the pause between those retries (tests replace it)

STATUS_NETWORK_SESSION_EXPIRED = 0xC000035C
STATUS_NOT_FOUND = 0xC0000225
_NOT_FOUND = {
    NtStatus.STATUS_OBJECT_NAME_NOT_FOUND,
    NtStatus.STATUS_OBJECT_PATH_NOT_FOUND,
    NtStatus.STATUS_NOT_FOUND,
    NtStatus.STATUS_NO_SUCH_FILE,
    NtStatus.STATUS_DELETE_PENDING,
}
_EXISTS = {NtStatus.STATUS_OBJECT_NAME_COLLISION, NtStatus.STATUS_DIRECTORY_NOT_EMPTY}
_SESSION_GONE = {
    STATUS_NETWORK_SESSION_EXPIRED,
    NtStatus.STATUS_USER_SESSION_DELETED,
    NtStatus.STATUS_NETWORK_NAME_DELETED,
}
_LOGON_REFUSED = {
    NtStatus.STATUS_LOGON_FAILURE,
    NtStatus.STATUS_WRONG_PASSWORD,
    NtStatus.STATUS_PASSWORD_EXPIRED,
    0xC0000072,  # STATUS_ACCOUNT_DISABLED
}
_BUSY = {NtStatus.STATUS_SHARING_VIOLATION, NtStatus.STATUS_ACCESS_DENIED}
_QUERY_KEYS = {"connect_timeout_seconds"}
_CRED_KEYS = {
    "username": "username",
    "user": "username",
    "password": "password",
    "pass": "password",
    "domain": "domain",
    "dom": "domain",
    "workgroup": "domain",
}

# CHANGE_NOTIFY: names added, removed or renamed in the folder itself (not its subfolders)
NOTIFY_FILTER = (
    CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME | CompletionFilter.FILE_NOTIFY_CHANGE_DIR_NAME
)
NOTIFY_BUFFER_BYTES = 4096  # room for the change list; a smaller reply says "enumerate"
NOTIFY_RETRY_SECONDS = (0.5, 10.0)  # first and longest pause before re-arming after trouble

T = TypeVar("T")


def _connection_error(err: BaseException) -> bool:
    """The connection broke or could not be made (smbprotocol reports a refused TCP connect as
    a ValueError; a reconnect it made on its own, without credentials, as a logon error)."""
    if isinstance(err, ValueError):
        return str(err).startswith("Failed to connect")
    return isinstance(err, (SMBException, ConnectionError, TimeoutError))


def _kind(attributes: int) -> Kind:
    """An entry's kind from its SMB file attributes: any reparse point (a symbolic link, a
    junction, a mount point) is a ``link`` and is never followed."""
    if attributes & FileAttributes.FILE_ATTRIBUTE_REPARSE_POINT:
        return "link"
    if attributes & FileAttributes.FILE_ATTRIBUTE_DIRECTORY:
        return "dir"
    if attributes & 0x40:  # FILE_ATTRIBUTE_DEVICE
        return "other"
    return "file"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    domain: str | None = None

    @property
    def login(self) -> str:
        return f"{self.domain}\\{self.username}" if self.domain else self.username


@dataclass(frozen=True)
class Location:
    """Where a URL points: server, share and the folder inside it (``a\\b``, or "")."""

    host: str
    port: int
    share: str
    folder: str
    user: str | None
    query: dict[str, str]

    @property
    def url(self) -> str:
        """The URL again, canonical and without any secret."""
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == DEFAULT_PORT else f":{self.port}"
        parts = [self.share, *(self.folder.split("\\") if self.folder else [])]
        path = "/".join(quote(p, safe="") for p in parts)
        query = "&".join(f"{k}={v}" for k, v in sorted(self.query.items()))
        return f"smb://{user}{host}{port}/{path}" + (f"?{query}" if query else "")

    @property
    def where(self) -> str:
        """``host:port/share`` for messages."""
        return f"{self.host}:{self.port}/{self.share}"


def parse_url(url: str) -> Location:
    """Split ``smb://user@host[:port]/share[/path][?connect_timeout_seconds=N]``; a password in
    the URL is refused (it would end up in policies.toml, logs and status output)."""
    parts = urlsplit(url)
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))  # for messages: no query
    if parts.scheme != "smb":
        raise ConfigError(f"{url}: not an smb:// URL")
    if parts.password is not None:
        safe = f"smb://{parts.username or ''}@{parts.hostname or ''}{parts.path}"
        raise ConfigError(
            f"{safe}: the URL must not contain a password; put it in {PASSWORD_ENV} or in a "
            f"credentials file (username=, password=, domain=; chmod 600) named by "
            f"{CREDENTIALS_ENV}"
        )
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as err:
        raise ConfigError(f"{url}: bad port ({err})") from None
    if not parts.hostname:
        raise ConfigError(f"{url}: no server name (smb://user@host/share/path)")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments:
        raise ConfigError(f"{url}: no share name (smb://user@host/share/path)")
    if parts.fragment:
        raise ConfigError(f"{url}: an SMB URL has no #fragment")
    share, rest = segments[0], "/".join(segments[1:])
    try:
        folder = clean_rel(rest).replace("/", "\\")
    except UnsafePath:
        raise ConfigError(f"{url}: the path must stay inside the share") from None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - _QUERY_KEYS)
    if unknown:
        known = ", ".join(sorted(_QUERY_KEYS))
        names = ", ".join(n[:40] for n in unknown)
        raise ConfigError(f"{url}: unknown URL option(s) {names} (known: {known})")
    user = unquote(parts.username) if parts.username else None
    return Location(parts.hostname, port, share, folder, user, query)


def read_credentials_file(path: Path) -> dict[str, str]:
    """A cifs-utils credentials file: ``username=``, ``password=``, ``domain=`` (one a line).
    It must not be readable or writable by group or others."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as err:
        raise ConfigError(
            f"{path}: cannot read the SMB credentials file named by {CREDENTIALS_ENV} "
            f"({err.strerror})"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path}: the SMB credentials file is open to group or others; run: chmod 600 {path}"
        )
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        canonical = _CRED_KEYS.get(key.strip().lower())
        if not sep or canonical is None:
            raise ConfigError(  # the line itself is not shown: it may be the password
                f"{path}, line {n}: expected username=, password= or domain="
            )
        out[canonical] = value if canonical == "password" else value.strip()
    return out


def load_credentials(
    loc: Location, *, password: str | None, env: Mapping[str, str] | None = None
) -> Credentials:
    """The user from the URL or the credentials file; the password from ``password``, the
    environment, or the credentials file (in that order)."""
    env = os.environ if env is None else env
    from_file: dict[str, str] = {}
    cred_path = env.get(CREDENTIALS_ENV)
    if cred_path:
        from_file = read_credentials_file(Path(cred_path))
    user = loc.user or from_file.get("username")
    if not user:
        raise ConfigError(
            f"{loc.url}: no SMB user: name it in the URL (smb://user@host/share) or in the "
            f"credentials file named by {CREDENTIALS_ENV}"
        )
    if loc.user and from_file.get("username") and from_file["username"] != loc.user:
        raise ConfigError(
            f"{loc.url}: the URL names user {loc.user!r} but {cred_path} names "
            f"{from_file['username']!r}"
        )
    secret = password if password is not None else env.get(PASSWORD_ENV)
    if secret is None:
        secret = from_file.get("password")
    if secret is None:
        raise ConfigError(
            f"{loc.url}: no SMB password: set {PASSWORD_ENV}, or {CREDENTIALS_ENV} to a "
            f"credentials file (username=, password=, domain=; chmod 600)"
        )
    return Credentials(user, secret, from_file.get("domain") or None)


class SmbBackend(Backend):
    """Files and folders under ``smb://user@host[:port]/share[/path]``.

    ``connect_timeout_seconds`` (or the URL option of that name; default 10) bounds connecting
    and negotiating; ``password`` is for programs that hold it already (the CLI reads the
    environment or the credentials file).
    """

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        connect_timeout_seconds: float | None = None,
    ) -> None:
        self._loc = parse_url(url)
        self.url = self._loc.url
        self._creds = load_credentials(self._loc, password=password)
        if connect_timeout_seconds is None:
            raw = self._loc.query.get("connect_timeout_seconds", DEFAULT_CONNECT_TIMEOUT_SECONDS)
            try:
                connect_timeout_seconds = float(raw)
            except ValueError:
                raise ConfigError(f"{self.url}: connect_timeout_seconds must be a number") from None
        if connect_timeout_seconds <= 0:
            raise ConfigError(f"{self.url}: connect_timeout_seconds must be above 0")
        self.connect_timeout_seconds = connect_timeout_seconds
        self._unc_share = f"\\\\{self._loc.host}\\{self._loc.share}"
        self._cache: dict[str, Any] = {}  # this backend's own connection pool (one connection)
        self._key = f"{self._loc.host.lower()}:{self._loc.port}"
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SmbBackend({self.url!r})"

    # ------------------------------------------------------------------ session
    @property
    def _kw(self) -> dict[str, Any]:
        return {
            "port": self._loc.port,
            "connection_cache": self._cache,
            "connection_timeout": self.connect_timeout_seconds,
            "require_signing": True,
        }

    def _connected(self) -> bool:
        conn = self._cache.get(self._key)
        return bool(
            conn is not None
            and conn.transport.connected
            and getattr(conn, "_t_exc", None) is None
            and conn.session_table
        )

    def connect(self) -> None:
        """Register the session (again, after a lost connection). Called by every operation;
        ConfigError for refused credentials, StorageUnavailable when the server is unreachable."""
        with self._lock:
            if self._connected():
                return
            self._drop_connection()
            try:
                self._open_connection()
                smbclient.register_session(
                    self._loc.host,
                    username=self._creds.login,
                    password=self._creds.password,
                    port=self._loc.port,
                    connection_timeout=self.connect_timeout_seconds,
                    connection_cache=self._cache,
                    require_signing=True,
                )
            except SMBAuthenticationError as err:
                self._drop_connection()
                raise ConfigError(self._logon_refused()) from self._scrubbed(err)
            except SMBResponseException as err:
                self._drop_connection()
                if err.status in _LOGON_REFUSED:
                    raise ConfigError(self._logon_refused()) from None
                raise StorageUnavailable(self._unavailable(err)) from self._scrubbed(err)
            except (ValueError, OSError, SMBException) as err:
                self._drop_connection()
                raise StorageUnavailable(self._unavailable(err)) from self._scrubbed(err)
            try:  # the share itself: a wrong name must be named, not walked up (makedirs)
                smbclient.stat(self._unc_share, **self._kw)
            except SMBOSError as err:
                self._drop_connection()
                # smbclient asks for a DFS referral first, so a missing share can come back as
                # STATUS_NOT_FOUND as well as BAD_NETWORK_NAME
                if err.ntstatus in (
                    NtStatus.STATUS_BAD_NETWORK_NAME,
                    *_NOT_FOUND,
                    STATUS_NOT_FOUND,
                ):
                    raise ConfigError(f"{self._loc.where}: no such share on the server") from None
                if err.ntstatus == NtStatus.STATUS_ACCESS_DENIED:
                    raise ConfigError(
                        f"{self._loc.where}: {self._creds.login!r} may not open this share"
                    ) from None
                raise StorageUnavailable(self._unavailable(err)) from self._scrubbed(err)
            except (ValueError, OSError, SMBException) as err:
                self._drop_connection()
                raise StorageUnavailable(self._unavailable(err)) from self._scrubbed(err)
            log.info("connected to %s as %s", self._loc.where, self._creds.login)

    def _open_connection(self) -> None:
        """Connect and negotiate, then leave the connection in this backend's pool for
        register_session to log on over. Done here because a connection that fails to negotiate
        (a server that accepts but never answers) is otherwise left behind with its thread."""
        conn = Connection(
            ClientConfig().client_guid, self._loc.host, self._loc.port, require_signing=True
        )
        try:
            conn.connect(timeout=self.connect_timeout_seconds)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.disconnect(close=False)
            raise
        self._cache[self._key] = conn

    def _drop_connection(self) -> None:
        conn = self._cache.pop(self._key, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.disconnect(close=conn.transport.connected, timeout=2)

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    def _logon_refused(self) -> str:
        return (
            f"{self._loc.where}: the server refused the logon of {self._creds.login!r} "
            f"(check {PASSWORD_ENV} or the credentials file named by {CREDENTIALS_ENV})"
        )

    def _unavailable(self, err: BaseException, rel: str | None = None) -> str:
        what = f"{rel}: " if rel else ""
        return f"{what}SMB server {self._loc.where} unavailable ({self._reason(err)})"

    def _reason(self, err: BaseException) -> str:
        cause = err.__cause__ if isinstance(err, ValueError) and err.__cause__ else err
        if isinstance(cause, OSError) and cause.strerror:
            text = cause.strerror
        elif isinstance(cause, SMBResponseException):
            text = f"NTSTATUS 0x{cause.status:08x}"
        else:
            text = str(cause) or type(cause).__name__
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        secret = self._creds.password
        return text.replace(secret, "***") if secret else text

    def _scrubbed(self, err: BaseException) -> BaseException | None:
        """The cause to chain, unless its text holds the password (never seen; belt and braces)."""
        secret = self._creds.password
        return None if secret and secret in str(err) else err

    # ------------------------------------------------------------------ paths and errors
    def _share_rel(self, rel: str) -> str:
        """``rel`` as a path inside the share (backslashes, no leading one)."""
        clean = clean_rel(rel).replace("/", "\\")
        return "\\".join(p for p in (self._loc.folder, clean) if p)

    def _unc(self, rel: str) -> str:
        inner = self._share_rel(rel)
        return f"{self._unc_share}\\{inner}" if inner else self._unc_share

    def _raise(self, err: BaseException, rel: str) -> NoReturn:
        """Map an smbprotocol error to the runtime's error tree (or re-raise it)."""
        if isinstance(err, SMBOSError):
            status = err.ntstatus
            if status in _NOT_FOUND:
                raise NotFound(f"{rel}: not found") from err
            if status in _EXISTS:
                raise AlreadyExists(f"{rel}: already exists") from err
            if status in _SESSION_GONE:
                self.close()
                raise StorageUnavailable(self._unavailable(err, rel)) from err
            if status == NtStatus.STATUS_BAD_NETWORK_NAME:
                raise ConfigError(f"{self._loc.where}: no such share on the server") from err
            if status == NtStatus.STATUS_FILE_IS_A_DIRECTORY:
                raise IsADirectoryError(f"{rel}: is a folder") from err
            if status == NtStatus.STATUS_NOT_A_DIRECTORY:
                raise NotADirectoryError(f"{rel}: not a folder") from err
            if status == NtStatus.STATUS_ACCESS_DENIED:
                raise PermissionError(f"{rel}: access denied by the server") from err
            raise err
        if isinstance(err, SMBResponseException) and err.status in _LOGON_REFUSED:
            self.close()
            raise ConfigError(self._logon_refused()) from None
        if _connection_error(err):
            self.close()
            raise StorageUnavailable(self._unavailable(err, rel)) from self._scrubbed(err)
        raise err

    def _call(self, rel: str, fn: Callable[[], T]) -> T:
        """Run one SMB operation: connect if needed, retry briefly while another client holds
        the object (sharing violation), map errors."""
        self.connect()
        delays = iter(BUSY_RETRY_SECONDS)
        while True:
            try:
                return fn()
            except SMBOSError as err:
                if err.ntstatus == NtStatus.STATUS_SHARING_VIOLATION:
                    delay = next(delays, None)
                    if delay is not None:
                        sleep(delay)
                        continue
                self._raise(err, rel)
            except (SMBException, OSError, ValueError) as err:
                self._raise(err, rel)

    @contextmanager
    def _mapped(self, rel: str) -> Iterator[None]:
        """Map SMB errors raised while a caller streams through an open file."""
        try:
            yield
        except (SMBException, ConnectionError) as err:
            self._raise(err, rel)

    # ------------------------------------------------------------------ reading
    def list(self, rel: str) -> list[Entry]:
        path = self._unc(rel)

        def scan() -> list[Entry]:
            out: list[Entry] = []
            with smbclient.scandir(path, **self._kw) as it:
                for de in it:
                    info = de.smb_info
                    mtime = info.last_write_time.timestamp()
                    out.append(
                        Entry(info.file_name, _kind(info.file_attributes), info.end_of_file, mtime)
                    )
            return out

        try:
            return self._call(rel, scan)
        except NotFound:
            return []

    def stat(self, rel: str) -> Entry | None:
        path = self._unc(rel)
        try:
            st = self._call(rel, lambda: smbclient.lstat(path, **self._kw))
        except NotFound:
            return None
        name = posixpath.basename(clean_rel(rel))
        return Entry(name, _kind(st.st_file_attributes), st.st_size, st.st_mtime)

    def read_bytes(self, rel: str, limit: int) -> bytes:
        with self.open_read(rel) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise BadJob(f"{rel}: larger than {limit} bytes")
        return data

    @contextmanager
    def open_read(self, rel: str) -> Iterator[BinaryIO]:
        f = self._open_file(rel, "rb", folder="not a regular file")
        try:
            with self._mapped(rel):
                yield cast(BinaryIO, f)
        finally:
            with contextlib.suppress(SMBException, OSError):
                f.close()

    def _open_file(self, rel: str, mode: str, *, folder: str) -> Any:
        """Open a file (never a folder: BadJob saying ``folder``) with full sharing, like a
        local file; FILE_OPEN_REPARSE_POINT opens a link itself, which is then refused."""
        path = self._unc(rel)

        def opener() -> Any:
            return smbclient.open_file(
                path,
                mode=mode,
                buffering=IO_CHUNK,
                share_access="rwd",
                file_type="file",
                create_options=CreateOptions.FILE_OPEN_REPARSE_POINT,
                **self._kw,
            )

        try:
            f = self._call(rel, opener)
        except IsADirectoryError:
            raise BadJob(f"{rel}: {folder}") from None
        if f.raw.fd.file_attributes & FileAttributes.FILE_ATTRIBUTE_REPARSE_POINT:
            with contextlib.suppress(SMBException, OSError):
                f.close()
            raise UnsafePath(f"{rel}: is a symbolic link (reparse point)")
        return f

    # ------------------------------------------------------------------ writing
    def makedirs(self, rel: str) -> None:
        if not self._share_rel(rel):
            return  # the share itself
        path = self._unc(rel)
        self._call(rel, lambda: smbclient.makedirs(path, exist_ok=True, **self._kw))

    def write_bytes(self, rel: str, data: bytes, *, fsync: bool) -> None:
        with self.open_write(rel, fsync=fsync) as f:
            f.write(data)

    @contextmanager
    def open_write(self, rel: str, *, fsync: bool) -> Iterator[BinaryIO]:
        """Create or truncate; ``fsync`` sends an SMB2 FLUSH (``Open.flush``) before the close,
        which Samba answers with an fsync (``strict sync = yes``, its default)."""
        f = self._open_file(rel, "wb", folder="is a folder")
        try:
            with self._mapped(rel):
                yield cast(BinaryIO, f)
                f.flush()
                if fsync:
                    f.raw.fd.flush()  # SMB2 FLUSH
                f.close()
        finally:
            with contextlib.suppress(SMBException, OSError):
                f.close()

    def _rename(self, src: str, dst: str, *, exclusive: bool) -> None:
        """One compound CREATE(src, DELETE) + SET_INFO(FileRenameInformation) + CLOSE.
        Exclusive: the open shares nothing, so only one client at a time can hold it."""
        target = self._share_rel(dst)
        if not target:
            raise AlreadyExists(f"{dst}: is the root")
        path = self._unc(src)

        def attempt() -> None:
            raw = SMBRawIO(
                path,
                mode="r",
                share_access=None if exclusive else "rwd",  # None: share mode 0
                desired_access=FilePipePrinterAccessMask.DELETE,
                create_options=CreateOptions.FILE_OPEN_REPARSE_POINT,  # a link itself moves
                **self._kw,
            )
            info = FileRenameInformation()
            info["replace_if_exists"] = not exclusive
            info["file_name"] = target
            # raw is not open: the transaction sends CREATE + SET_INFO + CLOSE as one related
            # compound, the rename going through the handle the CREATE returned
            with SMBFileTransaction(raw) as transaction:
                set_info(transaction, info)

        delays = iter(BUSY_RETRY_SECONDS)
        self.connect()
        while True:
            try:
                return attempt()
            except SMBOSError as err:
                # busy: a competitor holds src (sharing violation), a file inside a folder is
                # open elsewhere, or dst is open elsewhere (Samba: access denied for both)
                if err.ntstatus in _BUSY:
                    delay = next(delays, None)
                    if delay is not None:
                        sleep(delay)
                        continue
                    if err.ntstatus == NtStatus.STATUS_SHARING_VIOLATION:
                        raise NotFound(
                            f"{src}: held by another client (claimed elsewhere)"
                        ) from err
                    raise PermissionError(
                        f"{src} -> {dst}: access denied by the server (a file in it or the "
                        f"target may be open on another client)"
                    ) from err
                self._raise(err, dst if err.ntstatus in _EXISTS else src)
            except (SMBException, OSError, ValueError) as err:
                self._raise(err, src)

    def replace(self, src: str, dst: str) -> None:
        self._rename(src, dst, exclusive=False)

    def rename(self, src: str, dst: str) -> None:
        self._rename(src, dst, exclusive=True)

    def disk_usage(self) -> tuple[int, int] | None:
        """The share's size and what this user may still write (the server's quota view)."""
        path = self._unc("")
        vol = self._call("", lambda: smbclient.stat_volume(path, **self._kw))
        return int(vol.total_size), int(vol.caller_available_size)

    def fsync_dir(self, rel: str) -> None:
        """Nothing to do: SMB has no folder fsync; a rename is durable when the server says so."""

    def remove_file(self, rel: str) -> None:
        path = self._unc(rel)
        self._call(rel, lambda: smbclient.remove(path, **self._kw))

    def remove_dir(self, rel: str) -> None:
        path = self._unc(rel)
        self._call(rel, lambda: smbclient.rmdir(path, **self._kw))

    # ------------------------------------------------------------------ change notification
    def notify(
        self,
        rels: Sequence[str],
        wake: Callable[[], None],
        *,
        output_buffer_length: int = NOTIFY_BUFFER_BYTES,
    ) -> Notifier:
        """SMB2 CHANGE_NOTIFY on each folder (one thread each; see :class:`SmbNotifier`)."""
        return SmbNotifier(self, list(rels), wake, output_buffer_length=output_buffer_length)


class SmbNotifier:
    """One watcher thread per folder. SMB2 CHANGE_NOTIFY answers once, so each reply re-arms
    it; every reply calls ``wake`` (it only means "look again": the caller lists the folder). A
    reply that the change list did not fit (STATUS_NOTIFY_ENUM_DIR: an overflow) is a reply like
    any other. Added files are reported before their data is written, which the publish
    protocol already allows for (jobs appear in an inbox only by rename). A lost connection is
    logged once, retried with a growing pause, and ``wake`` is called when the watch is armed
    again (changes in between were not reported). The constructor returns once every folder
    was armed once (or failed once), so a listing made after it misses nothing."""

    def __init__(
        self,
        backend: SmbBackend,
        rels: list[str],
        wake: Callable[[], None],
        *,
        output_buffer_length: int,
    ) -> None:
        self.backend = backend
        self.wake = wake
        self.output_buffer_length = output_buffer_length
        self.replies = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        armed: list[threading.Event] = []
        for rel in rels:
            ready = threading.Event()
            thread = threading.Thread(
                target=self._watch, args=(rel, ready), name=f"smb-notify {rel}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
            armed.append(ready)
        deadline = time.monotonic() + backend.connect_timeout_seconds + 5
        for ready in armed:
            ready.wait(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _watch(self, rel: str, ready: threading.Event) -> None:
        pause = NOTIFY_RETRY_SECONDS[0]
        failing = False
        while not self._stop.is_set():
            try:
                self.backend.connect()
                folder = SMBDirectoryIO(
                    self.backend._unc(rel), mode="r", share_access="rwd", **self.backend._kw
                )
                folder.open()
            except Exception as err:  # the server is away, or the folder is not there yet
                failing = self._trouble(rel, err, failing)
                ready.set()
                self._stop.wait(pause)
                pause = min(pause * 2, NOTIFY_RETRY_SECONDS[1])
                continue
            try:
                watcher = self._arm(folder)
                ready.set()
                if failing:  # armed again after trouble: what was missed meanwhile?
                    log.info("change notification on %s is back", rel)
                    failing = False
                    self.wake()
                pause = NOTIFY_RETRY_SECONDS[0]
                while True:
                    while not watcher.response_event.wait(0.25):
                        if self._stop.is_set():
                            with contextlib.suppress(Exception):
                                watcher.cancel()
                            return
                    try:
                        watcher.result  # noqa: B018 - raises what the server answered
                    except SMBResponseException as err:
                        if err.status != NtStatus.STATUS_NOTIFY_ENUM_DIR:
                            raise
                    self.replies += 1
                    # arm again first, then wake: a change made while the loop lists the
                    # folder is reported by the new request
                    watcher = self._arm(folder)
                    self.wake()
            except Exception as err:  # connection lost mid-watch: look again, then re-arm
                failing = self._trouble(rel, err, failing)
                self.wake()
                self._stop.wait(pause)
                pause = min(pause * 2, NOTIFY_RETRY_SECONDS[1])
            finally:
                with contextlib.suppress(Exception):
                    folder.close()

    def _arm(self, folder: Any) -> FileSystemWatcher:
        watcher = FileSystemWatcher(folder.fd)
        watcher.start(NOTIFY_FILTER, output_buffer_length=self.output_buffer_length)
        return watcher

    def _trouble(self, rel: str, err: BaseException, failing: bool) -> bool:
        if not failing:  # once per state change, not once per retry
            log.warning(
                "change notification on %s stopped (%s); polling until it is back",
                rel,
                self.backend._scrub(str(err) or type(err).__name__),
            )
        return True
