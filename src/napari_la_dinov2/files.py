"""Writing files so that nobody sees half of one: a temporary in the target's folder, renamed
onto it when complete, with the permissions a plain ``open`` would have given."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def default_permissions(path: str | os.PathLike) -> None:
    """Give a file or folder made by tempfile (0600/0700) the modes a plain open() or mkdir()
    would have given it under the current umask, so a mask or checkpoint written atomically is
    as readable by colleagues as any other file."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


def atomic_write(target: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``target``: readers never see half a file, a
    failed write leaves no temporary behind, and the file gets the usual permissions."""
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        default_permissions(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
