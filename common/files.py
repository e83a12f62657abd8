"""Files a command writes: checked before the work, written whole or not at all."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import ConfigError, VGGError, WriteError, arg


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


NAME_MAX = 255  # bytes in one name (a path's component) on Linux's file systems


def check_name(path: str | os.PathLike) -> Path:
    """``path``, refused where one of its names is longer than a file system takes (the system would say only
    "File name too long")."""
    path = Path(path)
    long = next((part for part in path.parts if len(os.fsencode(part)) > NAME_MAX), None)
    if long is not None:
        raise ConfigError(
            f"{path}: the name {long[:24]}... is {len(os.fsencode(long))} bytes long, more than the {NAME_MAX} a file "
            f"system takes for one name; choose a shorter one"
        )
    return path


def check_utf8(path: str | os.PathLike, framework: str) -> Path:
    """``path``, refused where it is not valid UTF-8, for a framework that passes paths to C as UTF-8 (MXNet):
    said before any work, not when its first file is written."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"{str(path)!r} is not valid UTF-8, and {framework} reads and writes only paths that are: rename it, "
            f"or choose another path"
        ) from None
    return Path(path)


def check_target(path: str | os.PathLike) -> Path:
    """``path`` as a file to write: its folder exists (and is one), and it is not itself a folder."""
    path = check_name(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(f"{path.parent} is a file, not a folder; choose another path for {path.name}")
    if not path.parent.exists():
        raise ConfigError(f"folder {path.parent} does not exist; create it or choose another path")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; name a file to write")
    return path


# What a full disk (or quota) asks for: the path is right, the room is not.
FREE_SPACE = (
    "free some space there and run the command again (a training run continues from its last checkpoint with --resume)"
)


def atomic_write(path: str | os.PathLike, write, by_name: bool = False, overwrite: bool = True) -> Path:
    """Call ``write(file object)`` on a temporary file beside ``path``, then rename it into place.

    With ``by_name``, ``write`` gets the temporary file's path instead (for libraries that only write to a
    path); that name ends like ``path`` (``.weights.h5``, ...). A crash at any moment leaves either the old
    file or the new one, never half of one. The file gets the mode of any new file (0666 less the umask),
    not the temporary file's private 0600.

    Without ``overwrite``, a file at ``path`` is never replaced, even one that appeared after the command checked
    the path (another command writing there while this one worked): :func:`place_new` keeps this command's file
    beside it and says so (:class:`TargetAppeared`).
    """
    path = check_target(path)
    try:
        suffix = ".tmp" + "".join(path.suffixes)
        prefix = f".{path.name}."[: max(1, NAME_MAX - 8 - len(suffix))]  # mkstemp adds 8 characters
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise WriteError(f"cannot write in {path.parent} ({e.strerror}); {FREE_SPACE}") from None
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
        if overwrite:
            os.replace(tmp, path)
        else:
            place_new(tmp, path)
    except BaseException as e:
        if not isinstance(e, TargetAppeared):  # which keeps this command's file
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):  # the place is right; the room is not
            raise WriteError(f"cannot write {path} ({e.strerror}); {FREE_SPACE}") from None
        if isinstance(e, OSError) and not isinstance(e, VGGError):
            raise WriteError(f"cannot write {path} ({e.strerror or e}); choose another path") from None
        raise
    return path


class TargetAppeared(WriteError):
    """A file appeared at the path a command had checked, while it worked: left as it was; the command's own
    file is kept at :attr:`kept`."""

    def __init__(self, path: Path, kept: Path) -> None:
        self.kept = kept
        super().__init__(
            f"{path} appeared while this command ran and is left as it was; this command's file is {kept}: "
            f"rename it, or run again with {arg('overwrite', True)} to replace {path.name}"
        )


def sibling_name(path: Path, n: int) -> Path:
    """``path`` with ``-n`` before its first suffix (``bench-1.json``, ``w-1.weights.h5``): the same kind of file."""
    dot = path.name.find(".", 1)
    dot = len(path.name) if dot < 0 else dot
    return path.with_name(f"{path.name[:dot]}-{n}{path.name[dot:]}")


def place_new(tmp: str | os.PathLike, path: Path) -> None:
    """Move the finished file ``tmp`` to ``path`` where nothing is there, in one step that fails if something is
    (a hard link, which, unlike a rename, never replaces); otherwise keep it beside ``path`` under the first free
    :func:`sibling_name` (or, past a file system's name length, under its temporary name) and raise
    :class:`TargetAppeared`."""
    tmp = Path(tmp)
    try:
        _link_new(tmp, path)
        return
    except FileExistsError:
        pass
    kept = tmp
    for n in range(1, 1000):
        try:
            _link_new(tmp, sibling_name(path, n))
        except FileExistsError:
            continue
        except OSError:  # a name too long for the file system: the temporary name it has
            break
        kept = sibling_name(path, n)
        break
    raise TargetAppeared(path, kept)


def _link_new(tmp: Path, path: Path) -> None:
    """``tmp`` to ``path``, which must not exist (FileExistsError otherwise); ``tmp`` is gone after."""
    try:
        os.link(tmp, path)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # A file system without hard links (FAT, some network ones): claim the name first, then rename onto the
        # empty claim, which only this command made.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.replace(tmp, path)
        return
    tmp.unlink()
