"""Output files written whole or not at all, and checked before any work is done.

:class:`OutputGroup` writes several files as one unit (a mask, its overlay and its mesh): each
is written to a temporary file in its own target folder (same file system, so the final rename
is atomic), and only when all of them are ready are they renamed onto their targets. A failure
or Ctrl-C before that leaves none of them, and no temporary file either.

Without ``overwrite`` a target is created with ``os.link`` rather than ``os.replace``: linking
fails when the name exists, so of two processes writing the same new file one wins and the
other is refused, instead of the second silently replacing the first.

:func:`check_output_path` refuses, before a long job starts, an output that could not be
written at the end: a wrong suffix, a folder, an existing file, a missing folder, a parent that
is a file, or a folder that does not accept files (read-only, another user's, ``/proc``).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import InputError


def default_permissions(path: str | os.PathLike) -> None:
    """Give a file or folder made by tempfile (0600/0700) the modes a plain open() or mkdir()
    would have given it under the current umask, so a mask or checkpoint written atomically is
    as readable by colleagues as any other file."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


def _temporary_beside(target: Path) -> Path:
    # Hidden name with the real suffix: writers such as nibabel pick the format from the name,
    # and listings of masks skip names starting with a dot.
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    return Path(tmp)


def _link_new(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` onto ``target`` only if ``target`` does not exist (atomically)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise InputError(
            f"{target} was created by someone else while this ran; it was kept as it is: "
            "choose another name or pass --overwrite."
        ) from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # A file system without hard links (FAT, some network mounts): check, then rename.
        if target.exists():
            raise InputError(
                f"{target} already exists; choose another name or pass --overwrite."
            ) from None
        os.replace(tmp, target)
        return
    tmp.unlink()


class OutputGroup:
    """Files written as one unit: :meth:`add` writes each to a temporary file beside its
    target; leaving the ``with`` block renames them all, or, on an exception, removes every
    temporary (and any target this group had already created) so that none is left."""

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._staged: list[tuple[Path, Path]] = []

    def add(self, target: str | os.PathLike, write) -> Path:
        """Call ``write(tmp_path)`` now; ``target`` appears when the group is committed."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_beside(target)
        self._staged.append((tmp, target))
        write(tmp)
        default_permissions(tmp)
        return target

    def commit(self) -> None:
        created: list[Path] = []
        try:
            for tmp, target in self._staged:
                if self.overwrite:
                    os.replace(tmp, target)
                else:
                    _link_new(tmp, target)
                    created.append(target)
        except BaseException:
            for target in created:  # all or nothing: take back the ones this group made
                target.unlink(missing_ok=True)
            raise
        finally:
            self.discard()

    def discard(self) -> None:
        for tmp, _ in self._staged:
            tmp.unlink(missing_ok=True)
        self._staged.clear()

    def __enter__(self) -> OutputGroup:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def atomic_write(
    target: Path, write, *, overwrite: bool = True, group: OutputGroup | None = None
) -> None:
    """Call ``write(tmp_path)`` then rename onto ``target``: readers never see half a file, a
    failed write leaves no temporary behind, and the file gets the usual permissions. With a
    ``group`` the file is only staged there, to appear when the group is committed; with
    ``overwrite=False`` an existing ``target`` (even one created meanwhile) is kept."""
    if group is not None:
        group.add(target, write)
        return
    with OutputGroup(overwrite=overwrite) as own:
        own.add(target, write)


def _listing(suffixes: tuple[str, ...]) -> str:
    return ", ".join(suffixes[:-1]) + (" or " if len(suffixes) > 1 else "") + suffixes[-1]


def check_output_folder(folder: str | os.PathLike, *, allow_missing: bool = False) -> Path:
    """Refuse a folder that cannot receive files: a file in its path, a folder that does not
    accept new files, or, unless ``allow_missing`` (the writer then makes it and its missing
    parents), a missing folder: on the command line a typo would otherwise become a new tree
    of folders. Nothing is created here."""
    folder = Path(folder).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{existing} is a file, so {folder} cannot be a folder; check the path.")
    if existing != folder and not allow_missing:
        raise InputError(f"the folder {folder} does not exist; create it first or check the path.")
    try:  # the one reliable test: modes, read-only mounts, ACLs and /proc all answer to it
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise InputError(
            f"{folder} cannot be written: {existing} does not accept new files "
            f"({error.strerror or error}); choose another folder."
        ) from None
    return folder


def check_output_path(
    path: str | os.PathLike,
    overwrite: bool = False,
    *,
    suffixes: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd"),
    role: str = "output",
    noun: str = "mask",
    allow_missing_folder: bool = True,
) -> Path:
    """Validate an output path before any work is done, so a long job never ends in a refusal.
    ``suffixes``/``role``/``noun`` let other outputs (overlay, mesh) share the same checks; the
    command line passes ``allow_missing_folder=False`` (see :func:`check_output_folder`)."""
    path = Path(path).expanduser()
    if not path.name.lower().endswith(tuple(suffixes)):
        raise InputError(f"{path}: the {role} must end in {_listing(suffixes)}.")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name for the {noun}.")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; choose another name or pass --overwrite.")
    check_output_folder(path.parent, allow_missing=allow_missing_folder)
    return path
