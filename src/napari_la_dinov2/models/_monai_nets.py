"""MONAI's network classes without MONAI's package-wide import (the cold start of a segment).

Why: any ``monai.*`` import first runs ``monai/__init__``, which imports every MONAI submodule
(``utils.module.load_submodules``, twice, unconditionally, in MONAI 1.3 to 1.6: there is no
lazy mode) and with them transformers, matplotlib, pandas, scipy.signal and sympy. On our 2-core
machine that made ``la-dinov2 segment`` reach its first slice 4.1 s after process start; without
it, 1.2-1.6 s (``benchmarks/speed.py --only default``): the three classes' own modules import in
0.2-0.4 s. Importing ``monai.networks.nets.unet`` alone does not help: it runs the same
``__init__``, and MONAI's subpackages import each other in cycles that resolve only in the order
the full import takes.

How, only while :func:`monai_classes` imports the classes:

1. ``pkgutil.walk_packages`` lists nothing in MONAI's own folder, so ``load_submodules`` loads
   nothing; the rest of ``monai/__init__`` (version, warning filters, TF32 check) runs as usual;
2. every MONAI subpackage gets a lazy stand-in: its ``__init__`` is read, not run, and a name
   is imported on first access from the ``from .module import name`` line that exports it, so
   only the modules the classes need are executed;
3. then every ``monai*`` entry goes out of ``sys.modules`` again: the rest of the process sees
   MONAI as never imported, and a later ``import monai`` (training's losses, the metrics) is the
   ordinary full import. The classes keep their modules alive.

The classes are MONAI's own code, but not the same objects as a later full import's (an
``isinstance`` check against ``monai.networks.nets.UNet`` is False for nets built from them;
nothing here relies on that). When MONAI is already imported, its classes are used. Any
failure (a MONAI whose layout breaks these assumptions) falls back to the plain import. The
finder and the ``walk_packages`` filter are process-wide for the 0.2-0.4 s the import takes, so
a MONAI import by another thread in that window would see the lazy stand-ins; a lock serialises
this module's own callers. Checked with MONAI 1.3.2, 1.4.0, 1.5.0 and 1.6.1.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import pkgutil
import sys
import threading
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

# (module, class) of every MONAI network this package builds.
CLASSES = (
    ("monai.networks.nets.unet", "UNet"),
    ("monai.networks.nets.attentionunet", "AttentionUnet"),
    ("monai.networks.nets.flexible_unet", "FlexibleUNet"),
)

_lock = threading.Lock()
_classes: dict[str, type] = {}


def monai_classes() -> dict[str, type]:
    """``{class name: class}`` for :data:`CLASSES`, imported once per process."""
    with _lock:
        if not _classes:
            _classes.update(_import_classes())
        return _classes


def _import_classes() -> dict[str, type]:
    if "monai" in sys.modules:  # imported already (in full, by someone else): use it
        return _plain_import()
    before = set(sys.modules)
    try:
        with _light_monai():
            return _plain_import()
    except Exception as error:  # a MONAI these assumptions do not fit: the full import
        log.debug("light MONAI import failed (%r); importing MONAI in full", error)
    finally:
        for name in set(sys.modules) - before:
            if name.partition(".")[0] == "monai":
                del sys.modules[name]
    return _plain_import()


def _plain_import() -> dict[str, type]:
    return {name: getattr(importlib.import_module(module), name) for module, name in CLASSES}


@contextlib.contextmanager
def _light_monai():
    """Steps 1 and 2 of the module docstring, undone on exit."""
    spec = importlib.util.find_spec("monai")
    if spec is None:
        raise ModuleNotFoundError("No module named 'monai'", name="monai")
    own_folder = list(spec.submodule_search_locations)
    walk_packages = pkgutil.walk_packages

    def walk_all_but_monai(path=None, prefix="", onerror=None):
        if path is not None and list(path) == own_folder:
            return iter(())
        return walk_packages(path, prefix, onerror)

    finder = _LazyPackages()
    pkgutil.walk_packages = walk_all_but_monai
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        pkgutil.walk_packages = walk_packages


class _LazyPackages(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds MONAI's subpackages and loads each as a lazy stand-in (its ``__init__`` unrun)."""

    def find_spec(self, name, path, target=None):
        if not name.startswith("monai.") or path is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.submodule_search_locations is None:
            return None  # a plain module: the usual finders import it
        spec.loader = self
        return spec

    def create_module(self, spec):
        return None  # the default module object, with __path__ from the spec

    def exec_module(self, module: ModuleType) -> None:
        module.__getattr__ = _lazy_getattr(module, _exports(module.__spec__.origin))


def _exports(init_file: str) -> dict[str, str]:
    """``{name: submodule}`` from the ``from .submodule import name`` lines of an __init__."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
    return {
        alias.asname or alias.name: node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        for alias in node.names
    }


def _lazy_getattr(package: ModuleType, exports: dict[str, str]):
    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package.__name__), name)
        elif not name.startswith("__"):  # a submodule (``from package import submodule``)
            value = importlib.import_module(f"{package.__name__}.{name}")
        else:
            raise AttributeError(f"module {package.__name__!r} has no attribute {name!r}")
        setattr(package, name, value)
        return value

    return __getattr__
