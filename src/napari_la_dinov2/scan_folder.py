"""Segment every scan of a folder with one loaded model: masks plus a ``stats.csv`` of measures.

The cases of ``IN_DIR`` are its volume files (.nii, .nii.gz, .nrrd, .nhdr), its .zip files
and its sub-folders holding DICOM files (one series each), named by
:func:`~napari_la_dinov2.volume_files.case_name`. Each gets ``OUT_DIR/<case>.nii.gz`` and a row of
``stats.csv`` (:data:`COLUMNS`): ``ok`` or the sentence saying why it failed, the plausibility
warnings, the LA measures, the model and the seconds the case took (reading to writing).

Interruptions are safe: masks are written atomically, and ``stats.csv`` is rewritten atomically
before a case starts (its row then says :data:`UNFINISHED`) and after it ends. A case is done
when its mask exists and its row says ``ok``; a later run skips it unless ``overwrite``. A mask
in ``OUT_DIR`` that ``stats.csv`` does not record was not made by a run here, so it is refused
rather than replaced unless ``overwrite``.
"""

from __future__ import annotations

import csv
import glob
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .measures import LAMeasures
from .outputs import atomic_write, check_output_folder
from .volume_files import SUPPORTED_SUFFIXES, case_name, read_volume, write_labels

STATS_NAME = "stats.csv"
MASK_SUFFIX = ".nii.gz"
STATUS_OK = "ok"
UNFINISHED = "unfinished: the run stopped during this case"
# The measure columns are LAMeasures.as_row()'s keys, read off a dummy so they cannot drift.
MEASURE_COLUMNS = tuple(LAMeasures(0.0, 0.0, 0.0, 0.0, 0.0, (0.0, 0.0, 0.0), ()).as_row())
COLUMNS = ("case", "status", "warnings", *MEASURE_COLUMNS, "model", "seconds")


@dataclass
class FolderPlan:
    """What a run will do, decided before the model is loaded. ``rows``: ``stats.csv`` as it
    stands (case -> row), rows of cases no longer in ``IN_DIR`` included and kept."""

    out_dir: Path
    todo: list[tuple[str, Path]]
    skipped: list[str]
    rows: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def stats_path(self) -> Path:
        return self.out_dir / STATS_NAME

    def mask_path(self, name: str) -> Path:
        return self.out_dir / f"{name}{MASK_SUFFIX}"


@dataclass
class CaseResult:
    """One finished case: its ``stats.csv`` row and, when it failed, the exception."""

    name: str
    row: dict[str, str]
    error: Exception | None = None


def _is_case(path: Path) -> bool:
    from .dicom import looks_like_dicom

    if path.name.startswith("."):  # hidden files, and other writers' temporaries
        return False
    if not path.is_dir():  # a FIFO or device named like a scan is a case too: it gets its row
        name = path.name.lower()
        return name.endswith((*SUPPORTED_SUFFIXES, ".zip"))
    return looks_like_dicom(path)


def _check_inside(in_dir: Path, path: Path) -> None:
    """A link to a scan outside IN_DIR is refused, named: a folder of scans is what it holds."""
    if path.is_symlink() and not path.resolve().is_relative_to(in_dir.resolve()):
        raise InputError(
            f"{in_dir}: {path.name} is a link to {path.resolve()}, outside the folder; copy the "
            "scan into the folder (or segment it on its own)."
        )


def find_cases(in_dir: str | Path) -> list[tuple[str, Path]]:
    """``[(case name, path), ...]`` of the folder's scans, sorted by name."""
    in_dir = Path(in_dir).expanduser()
    if not in_dir.is_dir():
        raise InputError(f"{in_dir}: no such folder; check the path.")
    found: dict[str, list[Path]] = {}
    for path in sorted(in_dir.iterdir()):
        if _is_case(path):
            _check_inside(in_dir, path)
            found.setdefault(case_name(path), []).append(path)
    for name, paths in found.items():
        if len(paths) > 1:
            listing = ", ".join(p.name for p in paths)
            raise InputError(f"{in_dir} holds several scans named {name} ({listing}); rename one.")
    if not found:
        raise InputError(
            f"{in_dir} holds no volume file (.nii, .nii.gz, .nrrd), .zip or DICOM folder; to "
            "segment a DICOM series stored in it directly, give --out a file name (.nii.gz)."
        )
    return [(name, paths[0]) for name, paths in sorted(found.items())]


def read_stats(path: Path) -> dict[str, dict[str, str]]:
    """The rows of an existing ``stats.csv`` by case (empty if there is none)."""
    if not path.exists():
        return {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path} could not be read ({error}); move it away.") from error
    if not {"case", "status"} <= set(header):
        raise InputError(
            f"{path} is not a table written by la-dinov2 segment (no case and status columns); "
            "move it away or choose another output folder."
        )
    return {row["case"]: row for row in rows}


def write_stats(path: Path, rows: dict[str, dict[str, str]]) -> None:
    """Rewrite ``stats.csv`` atomically, one row per case in name order."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", restval="")
    writer.writeheader()
    for name in sorted(rows):
        writer.writerow(rows[name])
    text = buffer.getvalue()
    atomic_write(path, lambda tmp: tmp.write_text(text, newline="", encoding="utf-8"))


def plan_folder(in_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> FolderPlan:
    """Every check of a folder run, before any work: the cases, the output folder (it may be
    missing, and is made when the run starts, but not its parent: a missing parent is more
    likely a typo than a wish for a new tree), ``stats.csv`` and the masks already there."""
    cases = find_cases(in_dir)
    out_dir = Path(out_dir).expanduser()
    if out_dir.resolve() == Path(in_dir).expanduser().resolve():
        raise InputError(f"{out_dir} is the input folder; write the masks to another folder.")
    check_output_folder(out_dir if out_dir.exists() else out_dir.parent)
    plan = FolderPlan(out_dir=out_dir, todo=[], skipped=[])
    plan.rows = {} if overwrite else read_stats(plan.stats_path)
    for name, source in cases:
        mask, row = plan.mask_path(name), plan.rows.get(name)
        if mask.is_dir():
            raise InputError(f"{mask} is a folder; move it away from the output folder.")
        if mask.exists() and row is not None and row.get("status") == STATUS_OK:
            plan.skipped.append(name)
            continue
        if mask.exists() and row is None and not overwrite:
            raise InputError(
                f"{mask} already exists and {plan.stats_path} does not record it; choose "
                "another output folder or pass --overwrite."
            )
        plan.todo.append((name, source))
    return plan


def measure_columns(measures: LAMeasures | None) -> dict[str, str]:
    """The measures as CSV text (an empty mask: volume 0 and the shape columns left blank)."""
    if measures is None:
        return {"volume_ml": "0.00"}
    return {
        key: f"{value:.4f}" if key == "sphericity" else f"{value:.2f}"
        for key, value in measures.as_row().items()
    }


def segment_case(engine, source: Path, mask_path: Path) -> dict[str, str]:
    """Read, segment, measure and write one case with a
    :class:`~napari_la_dinov2.segmentation.SegmentationEngine`; the row's status, warnings and
    measures. Raises InputError for a scan that cannot be segmented (the caller records it)."""
    volume, meta = read_volume(source)
    result = engine.segment(volume, meta)
    write_labels(mask_path, result.labels, meta, overwrite=True)  # the plan allowed it
    return {
        "status": STATUS_OK,
        "warnings": " | ".join([*meta.extra.get("read_warnings", ()), *result.warnings]),
        **measure_columns(result.measures),
    }


def _remove_stale_temporaries(plan: FolderPlan) -> None:
    # A run killed with SIGKILL cannot remove its temporaries (hidden names beside the files
    # they were to become); the next run on the folder does.
    names = [plan.mask_path(name).name for name, _ in plan.todo] + [STATS_NAME]
    for name in names:
        for tmp in plan.out_dir.glob(f".{glob.escape(name)}.*"):
            tmp.unlink(missing_ok=True)


def give_memory_back() -> None:
    """Collect garbage and hand glibc's free heap pages back to the system. Each case frees
    hundreds of MB of arrays of other sizes than the next case's; glibc keeps the freed pages
    fragmented in its arenas, so a folder run's resident memory crept up by ~120 MB over 20 cases
    (489 to 611 MB). Trimmed after each case it stays flat (432 to 447 MB;
    benchmarks/batch_memory.py). Elsewhere than glibc: garbage collection only."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows, musl)
        pass


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def segment_cases(plan: FolderPlan, engine, model_name: str) -> Iterator[CaseResult]:
    """Segment the plan's cases one by one, yielding each result as it is recorded. A case that
    fails gets its row (status: the error's sentence) and the run goes on; Ctrl-C stops it."""
    plan.out_dir.mkdir(exist_ok=True)
    _remove_stale_temporaries(plan)
    for name, source in plan.todo:
        plan.rows[name] = {"case": name, "status": UNFINISHED, "model": model_name}
        write_stats(plan.stats_path, plan.rows)
        start, error = time.perf_counter(), None
        try:
            row = segment_case(engine, source, plan.mask_path(name))
        except InputError as failure:
            row, error = {"status": _one_line(failure)}, failure
        except Exception as failure:  # a bug: recorded, reported, and the folder run goes on
            status = f"internal error: {type(failure).__name__}: {_one_line(failure)}"
            row, error = {"status": status}, failure
        give_memory_back()
        seconds = f"{time.perf_counter() - start:.1f}"
        plan.rows[name] = {"case": name, **row, "model": model_name, "seconds": seconds}
        write_stats(plan.stats_path, plan.rows)
        yield CaseResult(name, plan.rows[name], error)
