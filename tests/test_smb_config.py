"""`dashspool check-config` against a real Samba: it reaches the share, writes and renames there,
and says exactly what is wrong (refused logon, no such share, no write permission, server away)
without ever printing the password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from sambaserver import SambaServer, free_port

from watchers.backends.smb import CREDENTIALS_ENV, PASSWORD_ENV


def check(tmp_path: Path, url: str, password: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "policies.toml"
    cfg.write_text(f'[spool]\npath = "{url}"\n')
    env = {k: v for k, v in os.environ.items() if k != CREDENTIALS_ENV}
    env.update({PASSWORD_ENV: password, "PYTHONPATH": str(REPO)})
    return subprocess.run(
        [sys.executable, "-m", "watchers.cli", "--config", str(cfg), "check-config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def said(r: subprocess.CompletedProcess[str]) -> str:
    return r.stdout + r.stderr


def test_a_good_share_is_reached_written_and_watched(samba: SambaServer, tmp_path: Path) -> None:
    r = check(tmp_path, samba.url + "/cfg-ok", samba.password)
    assert r.returncode == 0, said(r)
    assert "change notification" in r.stdout and "configuration OK" in r.stdout
    assert (samba.share_dir / "cfg-ok" / "ingest" / "inbox").is_dir()
    assert samba.password not in said(r)


def test_a_wrong_password_is_named_as_a_refused_logon(samba: SambaServer, tmp_path: Path) -> None:
    wrong = "not-the-" + samba.password
    r = check(tmp_path, samba.url, wrong)
    assert r.returncode == 3, said(r)
    assert "refused the logon" in r.stdout and samba.user in r.stdout
    assert wrong not in said(r)


def test_no_such_share(samba: SambaServer, tmp_path: Path) -> None:
    url = f"smb://{samba.user}@{samba.host}:{samba.port}/nosuchshare"
    r = check(tmp_path, url, samba.password)
    assert r.returncode == 3, said(r)
    assert "no such share" in r.stdout


def test_a_folder_the_user_may_not_write(samba: SambaServer, tmp_path: Path) -> None:
    locked = samba.share_dir / "locked"
    locked.mkdir(exist_ok=True)
    locked.chmod(0o555)  # owned by root: the SMB user can list it, not write
    r = check(tmp_path, samba.url + "/locked", samba.password)
    assert r.returncode == 3, said(r)
    assert "no permission" in r.stdout or "access denied" in r.stdout


def test_a_server_that_is_away_is_unreachable_exit_5(tmp_path: Path) -> None:
    url = f"smb://someone@127.0.0.1:{free_port()}/share?connect_timeout_seconds=2"
    r = check(tmp_path, url, "secret-pw-1234")
    assert r.returncode == 5, said(r)
    assert "unreachable" in r.stdout and "secret-pw-1234" not in said(r)
