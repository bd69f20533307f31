"""One live run per output folder: `OUT/.mrseg/lock`, held for the whole of a predict run.

Two runs writing into one folder corrupt it. The lock file holds `{"pid", "host", "started"}` of its owner
and is held with a POSIX record lock (`fcntl.lockf`, exclusive, non-blocking), which the kernel drops when the
owner dies, even by `kill -9`, and which forked children (DataLoader workers, which may outlive a killed run
for a moment) don't inherit, unlike `flock`: a lock file that is not locked was left by a dead run and is
taken over (with a note). NFS supports these locks too.
The owner never opens the file a second time (closing any descriptor of it would drop a POSIX lock).
Where the filesystem has no locks at all, the pid is checked instead: a lock of this host whose pid no
longer runs is stale; one of another host is refused (its pid can't be checked from here). Under torchrun,
rank 0 takes the lock; the other ranks check that they see the same lock file (`same_lock`), which they
don't when `--out` is not on a shared filesystem.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
from pathlib import Path

from mrseg.outputs.paths import STATE_DIR

try:
    import fcntl
except ImportError:  # Windows: pid checks only
    fcntl = None

LOCK_NAME = "lock"


_HELD: set[str] = set()  # lock files this process holds (POSIX locks don't conflict within a process)


class RunLockError(RuntimeError):
    """Another live run holds the output folder (the message names it and says what to do)."""


def lock_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / STATE_DIR / LOCK_NAME


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a zombie counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    return True


def _parse_owner(data: bytes) -> dict:
    try:
        owner = json.loads(data.decode("utf-8"))
        return owner if isinstance(owner, dict) else {}
    except ValueError:
        return {}


def _read_fd(fd: int) -> dict:
    return _parse_owner(os.pread(fd, 65536, 0))


def _describe(owner: dict) -> str:
    pid, host, started = (owner.get(k, "?") for k in ("pid", "host", "started"))
    return f"pid {pid} on host {host}, started {started}"


def _refusal(path: Path, owner: dict) -> RunLockError:
    return RunLockError(
        f"{path.parent.parent} is in use by another mrseg predict run ({_describe(owner)}). Wait for it to "
        f"finish (or stop it), then run again (with --resume to continue its work); or choose another --out. "
        f"If you are sure no run is using it, delete {path}."
    )


class RunLock:
    """The lock of one output folder, held until `release()` (or the process ends)."""

    def __init__(self, path: Path, fd: int, owner: dict, note: str | None):
        self.path = path
        self._fd = fd
        self.owner = owner
        self.note = note  # set when a stale lock of a dead run was taken over

    @classmethod
    def acquire(cls, out_dir: str | os.PathLike) -> RunLock:
        """Take the lock of `out_dir` (making `OUT/.mrseg/`), or raise RunLockError naming the live owner."""
        path = lock_path(out_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.abspath(path) in _HELD:
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started": "(this process)"}
            raise _refusal(path, me)
        for _ in range(20):  # retried only when the file was replaced while we opened it
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = _try_lock(fd)
                if locked is False:
                    raise _refusal(path, _read_fd(fd))
                try:
                    same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same_file = False
                if not same_file:  # its owner released (unlinked) it between our open and lock: again
                    os.close(fd)
                    continue
                old = _read_fd(fd)
                note = _stale_note(path, old, checked_by_lock=locked is True)
                started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
                owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(owner).encode("utf-8"), 0)
                os.fsync(fd)
                _HELD.add(os.path.abspath(path))
                return cls(path, fd, owner, note)
            except BaseException:
                os.close(fd)
                raise
        raise RunLockError(f"{path}: could not take the lock (it keeps being replaced); try again")

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd < 0:
            return
        try:
            if _read_fd(self._fd) == self.owner:
                self.path.unlink(missing_ok=True)
        finally:
            _HELD.discard(os.path.abspath(self.path))
            os.close(self._fd)
            self._fd = -1

    def token(self) -> dict:
        """What the other ranks compare with the lock file they see (`same_lock`)."""
        return dict(self.owner)


def _try_lock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: this filesystem has no locks."""
    if fcntl is None:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP, ...: fall back to the pid check


def _stale_note(path: Path, old: dict, *, checked_by_lock: bool) -> str | None:
    """None when the lock file was empty (a new or cleanly released lock), else the takeover note; raises
    RunLockError when, without locks, the owner may still run."""
    if not old:
        return None
    host, pid = old.get("host"), old.get("pid")
    if not checked_by_lock:
        if host != socket.gethostname():
            raise _refusal(path, old)  # can't tell whether a process on another host runs
        if isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
            raise _refusal(path, old)
    return f"note: {path} was left by a run that no longer runs ({_describe(old)}; killed?); taking it over."


def same_lock(out_dir: str | os.PathLike, token: dict) -> bool:
    """Whether `OUT/.mrseg/lock` as this process sees it is the lock whose `token` rank 0 took (read through a
    new descriptor: never by the process holding the lock)."""
    try:
        owner = _parse_owner(lock_path(out_dir).read_bytes())
    except OSError:
        owner = {}
    return owner == token
