"""A throwaway Samba server on loopback for the SMB backend's tests.

:class:`SambaServer` runs Debian's ``smbd`` as a plain foreground process with a private smb.conf
under one temp folder (its own lock, state, cache, private, pid and ncalrpc folders, log file and
tdbsam passdb), one read-write share, and one test Unix user behind the SMB user. It listens on
127.0.0.1 only, on a high port checked free first: smbd binds with SO_REUSEPORT, so a second
smbd on a busy port would start "fine" and share the first one's connections.

``stop()`` and ``start()`` again keep the port, share and user, so a test can take the server
away and bring it back. Without smbd the tests skip, unless ``DASHSPOOL_REQUIRE_SAMBA=1`` (CI),
where they fail: ``make system-deps`` installs Debian's ``samba``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest

SMBD = "/usr/sbin/smbd"
USER = "dashspool-smbtest"
SHARE = "spool"
START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 10.0

CONF = """\
[global]
    server role = standalone server
    security = user
    interfaces = 127.0.0.1
    bind interfaces only = yes
    smb ports = {port}
    disable netbios = yes
    server min protocol = SMB2_10
    server signing = mandatory
    map to guest = never
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    rpc start on demand helpers = no
    lock directory = {dir}/lock
    state directory = {dir}/state
    cache directory = {dir}/cache
    private dir = {dir}/private
    pid directory = {dir}/pid
    ncalrpc dir = {dir}/ncalrpc
    log file = {dir}/log/smbd.log
    max log size = 0
    log level = 1
    passdb backend = tdbsam:{dir}/private/passdb.tdb

[{share}]
    path = {share_dir}
    read only = no
    valid users = {user}
    create mask = 0644
    directory mask = 0755
"""


def smbd_path() -> str | None:
    """smbd if installed (it lives in /usr/sbin, which is not on every PATH)."""
    found = shutil.which("smbd")
    if found:
        return found
    return SMBD if os.access(SMBD, os.X_OK) else None


def require_smbd() -> str:
    """smbd's path; skips the test without it, fails when ``DASHSPOOL_REQUIRE_SAMBA=1``."""
    path = smbd_path()
    if path is None or shutil.which("smbpasswd") is None:
        reason = "Samba missing (make system-deps, or apt-get install samba)"
        if os.environ.get("DASHSPOOL_REQUIRE_SAMBA") == "1":
            pytest.fail(f"DASHSPOOL_REQUIRE_SAMBA=1 but {reason}")
        pytest.skip(reason)
    if os.geteuid() != 0:
        reason = "a private smbd needs root here (it switches to the test user for file access)"
        if os.environ.get("DASHSPOOL_REQUIRE_SAMBA") == "1":
            pytest.fail(f"DASHSPOOL_REQUIRE_SAMBA=1 but {reason}")
        pytest.skip(reason)
    return path


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port. The probe does not set SO_REUSEPORT, so it
    cannot share a port with an smbd that did; SO_REUSEADDR lets it past TIME_WAIT leftovers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def free_port() -> int:
    """A free port below the ephemeral range (so client sockets do not take it meanwhile)."""
    for _ in range(200):
        port = random.randint(20_000, 32_000)
        if port_is_free(port):
            return port
    raise RuntimeError("no free port found in 20000-32000")


def ensure_user(user: str) -> None:
    """The Unix account Samba maps the SMB user to (created once, kept)."""
    if subprocess.run(["id", "-u", user], capture_output=True).returncode == 0:
        return
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
        check=True,
        capture_output=True,
    )


class SambaServer:
    """One private smbd. Use as a context manager, or ``start()`` / ``stop()`` / ``close()``."""

    def __init__(self, *, user: str = USER, share: str = SHARE, port: int | None = None) -> None:
        self.smbd = require_smbd()
        self.user = user
        self.share = share
        self.password = "pw-" + secrets.token_hex(12)
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="dashspool-samba-"))
        self.dir.chmod(0o711)  # the test user must traverse it to reach the share
        self.share_dir = self.dir / "share"
        self.conf = self.dir / "smb.conf"
        self.log = self.dir / "log" / "smbd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            self._configure()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        """The share's URL for :class:`watchers.backends.smb.SmbBackend` (no password)."""
        return f"smb://{self.user}@{self.host}:{self.port}/{self.share}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _configure(self) -> None:
        # smbd checks whether another smbd holding a share mode is alive by reading
        # lock/msg.lock/<pid> while it acts as the logged-on user: a 0700 lock folder makes every
        # other smbd look dead, and it then steals their locks (and panics). Only private/ is 0700.
        for sub in ("lock", "state", "cache", "pid", "ncalrpc", "log"):
            (self.dir / sub).mkdir()
            (self.dir / sub).chmod(0o755)  # whatever the umask
        (self.dir / "private").mkdir(mode=0o700)
        ensure_user(self.user)
        self.share_dir.mkdir()
        shutil.chown(self.share_dir, self.user, self.user)
        self.conf.write_text(
            CONF.format(
                port=self.port,
                dir=self.dir,
                share=self.share,
                share_dir=self.share_dir,
                user=self.user,
            )
        )
        subprocess.run(
            ["smbpasswd", "-c", str(self.conf), "-s", "-a", self.user],
            input=f"{self.password}\n{self.password}\n".encode(),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        """Start smbd (again) on the same port and share; returns once the port accepts."""
        if self.running:
            return
        if not port_is_free(self.port):
            raise RuntimeError(
                f"port {self.port} is in use: refusing to share it with another smbd"
            )
        out = open(self.dir / "log" / "smbd.stdout", "ab")  # noqa: SIM115 - closed below
        try:
            # its own session: stop() can end smbd's per-connection children with it
            self._proc = subprocess.Popen(
                [self.smbd, "-F", "--no-process-group", "-s", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"smbd exited with {self._proc.returncode}: {self.tail_log()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"smbd did not listen on {self.port} in time: {self.tail_log()}")

    def stop(self) -> None:
        """SIGTERM smbd (SIGKILL after a timeout), then end what is left of its process group
        (connection children) and a samba-dcerpcd it may have started."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(STOP_TIMEOUT_SECONDS)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group smbd led: only its children
        self._kill_pidfile("samba-dcerpcd.pid")

    def _kill_pidfile(self, name: str) -> None:
        path = self.dir / "pid" / name
        try:
            pid = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
        path.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def version(self) -> str:
        """``smbd --version`` without the word "Version" (e.g. ``4.17.12-Debian``)."""
        out = subprocess.run([self.smbd, "--version"], capture_output=True, text=True).stdout
        return out.strip().removeprefix("Version ").strip() or "?"

    def tail_log(self, lines: int = 20) -> str:
        text = ""
        for path in (self.dir / "log" / "smbd.stdout", self.log):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> SambaServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
