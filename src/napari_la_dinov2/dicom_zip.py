"""A zip of a DICOM series extracted to a temporary folder, trusting nothing the archive says.

Member names that would land outside the folder (absolute, ``..``, a drive letter) are refused
before anything is written. The size limit is enforced on the bytes actually decompressed, as
they are written, not on the sizes the archive declares (which a bomb may understate): at most
:data:`MAX_UNZIPPED_BYTES` (plus one chunk) ever reach the disk. Read errors (bad CRC, an
encrypted member, an unsupported compression, a truncated archive) become one sentence.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from .errors import InputError

# A zip larger than this once extracted is refused: a real MR series is tens of MB, a long one a
# few hundred; this leaves room for a whole study and stops a bomb long before the disk fills.
MAX_UNZIPPED_BYTES = 2 * 1024**3
CHUNK_BYTES = 1024**2
# What zipfile and zlib raise for a damaged, encrypted or exotic archive.
_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    RuntimeError,
    NotImplementedError,
    EOFError,
    OSError,
    ValueError,
)


@contextmanager
def extracted(zip_path: Path) -> Iterator[Path]:
    """Extract ``zip_path`` to a temporary folder (removed on exit) and yield the folder."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except _READ_ERRORS as error:
        raise InputError(f"{zip_path} is not a readable zip file ({_reason(error)}).") from error
    with archive, tempfile.TemporaryDirectory(prefix="la-dinov2-dicom-") as tmp:
        members = [m for m in archive.infolist() if not m.is_dir()]
        for member in members:
            _check_name(zip_path, member.filename)
        declared = sum(m.file_size for m in members)
        if declared > MAX_UNZIPPED_BYTES:
            raise InputError(_too_large(zip_path))
        _check_free_space(zip_path, Path(tmp), declared)
        written = 0
        for member in members:
            written = _extract_member(zip_path, archive, member, Path(tmp), written)
        yield Path(tmp)


def _check_name(zip_path: Path, filename: str) -> None:
    name = filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise InputError(
            f"{zip_path} holds the member '{filename}' that points outside the archive (an "
            "absolute path or '..'); refusing to extract it."
        )


def _extract_member(zip_path: Path, archive, member, folder: Path, written: int) -> int:
    """Copy one member chunk by chunk, counting every byte against the limit; the new total."""
    target = folder / member.filename.replace("\\", "/")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with archive.open(member) as source, open(target, "wb") as sink:
            while chunk := source.read(CHUNK_BYTES):
                written += len(chunk)
                if written > MAX_UNZIPPED_BYTES:
                    raise InputError(_too_large(zip_path))
                sink.write(chunk)
    except InputError:
        raise
    except _READ_ERRORS as error:
        raise InputError(
            f"{zip_path}: its member '{member.filename}' cannot be extracted ({_reason(error)}); "
            "the archive is damaged or encrypted: export the series again, without a password."
        ) from error
    return written


def _check_free_space(zip_path: Path, folder: Path, declared: int) -> None:
    free = shutil.disk_usage(folder).free
    if declared > free:
        raise InputError(
            f"{zip_path} would extract to {declared / 2**20:.0f} MB but the temporary folder "
            f"{tempfile.gettempdir()} has only {free / 2**20:.0f} MB free; set TMPDIR to a "
            "folder with room, or unzip it yourself."
        )


def _too_large(zip_path: Path) -> str:
    limit = MAX_UNZIPPED_BYTES
    shown = f"{limit / 1024**3:.0f} GB" if limit >= 1024**3 else f"{limit / 1024**2:.0f} MB"
    return f"{zip_path} extracts to more than {shown}; it is not one MR series (a zip bomb?)."


def _reason(error: Exception) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__
