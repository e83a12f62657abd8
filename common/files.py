"""Files a command writes: checked before the work, written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ConfigError, VGGError, WriteError


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def check_target(path: str | os.PathLike) -> Path:
    """``path`` as a file to write: its folder exists (and is one), and it is not itself a folder."""
    path = Path(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(f"{path.parent} is a file, not a folder; choose another path for {path.name}")
    if not path.parent.exists():
        raise ConfigError(f"folder {path.parent} does not exist; create it or choose another path")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; name a file to write")
    return path


def atomic_write(path: str | os.PathLike, write, by_name: bool = False) -> Path:
    """Call ``write(file object)`` on a temporary file beside ``path``, then rename it into place.

    With ``by_name``, ``write`` gets the temporary file's path instead (for libraries that only write to a
    path); that name ends like ``path`` (``.weights.h5``, ...). A crash at any moment leaves either the old
    file or the new one, never half of one. The file gets the mode of any new file (0666 less the umask),
    not the temporary file's private 0600.
    """
    path = check_target(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes))
    except OSError as e:
        raise WriteError(f"cannot write in {path.parent} ({e.strerror}); choose a folder you can write to") from None
    try:
        if by_name:
            os.close(fd)
            write(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        else:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, VGGError):
            raise WriteError(f"cannot write {path} ({e.strerror or e}); choose another path") from None
        raise
    return path
