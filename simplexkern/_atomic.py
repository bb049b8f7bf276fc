"""Files written atomically: a reader sees the old file or the whole new one, never part.

The temporary file is ``.<name>.<host>-<pid>.<random>.tmp`` beside the target, so that a
later run can tell the leftovers of a killed writer (same host, process gone) from the files
another live process is writing."""

import contextlib
import os
import pathlib
import re
import socket
import tempfile

_LEFTOVER = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp$")


def _host():
    return socket.gethostname().split(".")[0].replace("-", "_") or "host"


def _file_mode():
    """The mode ``open()`` gives a new file: 0o666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Yields a file object (``mode``) for a temporary file beside ``path``; when the block
    finishes it is flushed to disk, given the mode ``open()`` would give, and replaces
    ``path``; when the block fails it is removed, leaving ``path`` as it was."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_host()}-{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), _file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_leftovers(folder):
    """Removes, under ``folder``, the temporary files of ``atomic_write``s on this host whose
    process is gone (killed mid-write); returns their paths."""
    removed = []
    for path in pathlib.Path(folder).rglob(".*.tmp"):
        match = _LEFTOVER.match(path.name)
        if match and match["host"] == _host() and not _alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
