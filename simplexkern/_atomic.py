"""Files written atomically: a reader sees the old file or the whole new one, never part."""
import contextlib
import os
import pathlib
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Yields a file object (``mode``) for a temporary file beside ``path``; when the block
    finishes it is flushed to disk and replaces ``path``, and when the block fails it is
    removed, leaving ``path`` as it was."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
