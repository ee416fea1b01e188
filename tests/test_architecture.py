"""The package's shape, enforced: no import circle, the model layers in order, no napari or Qt
below the widget layer, and functions and files of a readable size."""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "napari_la_dinov2"
# Beside the package, the Python files held to the same file size and formatting rules.
OTHER_CODE = ("tests", "benchmarks", "training", "scripts")
NAME = PACKAGE.name
# The napari adapters: the only modules that may import napari, Qt or magicgui.
ADAPTERS = ("_widgets", "_reader", "_writer", "_sample_data", "launch")
GUI_LIBRARIES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt")
# Model layers, each importing only those before it.
MODEL_LAYERS = [
    ("baselines", "dinov2", "ensemble", "limits"),
    ("registry",),
    ("segmenter",),
    ("checkpoint",),
    ("packing",),
]
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """Every module this one imports, anywhere in it (a lazy import inside a function is
    still a dependency), except under ``if TYPE_CHECKING``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from . import distributed`` imports the submodule, not (only) the package
            submodules = {f"{target}.{a.name}" for a in node.names} & set(MODULES)
            found |= submodules
            if node.module or len(submodules) < len(node.names):
                found.add(target)
    return found


GRAPH = {name: {m for m in _imports(name) if m in MODULES and m != name} for name in MODULES}


def _cycle_from(start: str) -> list[str] | None:
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in GRAPH[node]:
            if nxt == start:
                return [*path, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_the_walk_sees_the_package():
    assert f"{NAME}.models.segmenter" in GRAPH[f"{NAME}.models.checkpoint"]
    assert f"{NAME}.training.distributed" in GRAPH[f"{NAME}.training.finetune"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_circle(module):
    assert _cycle_from(module) is None, " -> ".join(_cycle_from(module))


def test_model_layers_import_only_the_layers_before_them():
    for index, layer in enumerate(MODEL_LAYERS):
        later = {f"{NAME}.models.{m}" for group in MODEL_LAYERS[index + 1 :] for m in group}
        for module in layer:
            name = f"{NAME}.models.{module}"
            assert not (GRAPH[name] & later), f"{name} imports a later layer"


def test_the_engine_imports_no_gui_library():
    for name in MODULES:
        if any(part in ADAPTERS for part in name.split(".")[1:]):
            continue
        gui = {m for m in _imports(name) if m.split(".")[0] in GUI_LIBRARIES}
        assert not gui, f"{name} imports {sorted(gui)}"


def _too_long(path: Path, name: str) -> tuple[list[str], list[str]]:
    """``path`` as a too long file, and its too long functions, named after ``name``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    long_file = [f"{name}: {len(lines)} lines"] if len(lines) > MAX_FILE_LINES else []
    long_functions = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse("\n".join(lines)))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    return long_file, long_functions


def test_functions_and_files_stay_readable():
    found = [_too_long(path, name) for name, path in MODULES.items()]
    assert not [f for files, _ in found for f in files]
    assert not [f for _, functions in found for f in functions]


def _other_python_files() -> list[Path]:
    return sorted(p for folder in OTHER_CODE for p in (REPO / folder).rglob("*.py"))


def test_tests_benchmarks_recipes_and_scripts_stay_readable():
    files = _other_python_files()
    assert any(p.name == "test_architecture.py" for p in files)  # the walk sees them
    found = [_too_long(path, str(path.relative_to(REPO))) for path in files]
    assert not [f for files, _ in found for f in files]
    assert not [f for _, functions in found for f in functions]


# A comment that turns the formatter (ruff, black) off for a line or a block.
_FORMATTER_OFF = re.compile(r"\bfmt:\s*(skip|off)\b")


def _formatter_switches(source: str) -> list[int]:
    """The lines whose comment turns the formatter off (strings that mention it do not)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [
        token.start[0]
        for token in tokens
        if token.type == tokenize.COMMENT and _FORMATTER_OFF.search(token.string)
    ]


def test_the_switch_check_sees_a_switch():
    source = "x = [1,  2]  # fmt: skip\ny = 'fmt: skip in a string'\n# fmt: off\n"
    assert _formatter_switches(source) == [1, 3]


def test_no_code_is_packed_past_the_formatter():
    """Code is split by role, not squeezed onto fewer lines to fit the size limits."""
    files = [*MODULES.values(), *_other_python_files()]
    switches = [
        f"{p.relative_to(REPO)}:{line}"
        for p in files
        for line in _formatter_switches(p.read_text(encoding="utf-8"))
    ]
    assert not switches, switches


# The engine's one entry: the only module that builds a Predictor (training's validation
# also builds its own, on the model it is training: it needs no region, measures nor doubt).
ENTRY = f"{NAME}.segmentation"
PREDICTOR_BUILDERS = {ENTRY}
PREDICTOR_BUILDER_PACKAGES = (f"{NAME}.training.",)
# Measuring a mask: the measures module itself, the entry, and `la-dinov2 mesh` (a mask file in).
MEASURING = {"la_measures", "plausibility_warnings", "measure_mask"}
MEASURERS = {f"{NAME}.measures", ENTRY, f"{NAME}.cli.mesh"}


def _called_names(name: str) -> set[str]:
    """The names this module calls, as ``f(...)`` or ``module.f(...)``."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            found.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return found


def test_only_the_entry_builds_a_predictor():
    assert {"Predictor", "measure_mask"} <= _called_names(ENTRY)  # the walk sees the calls
    builders = {
        name
        for name in MODULES
        if "Predictor" in _called_names(name)
        and name not in PREDICTOR_BUILDERS
        and not name.startswith(PREDICTOR_BUILDER_PACKAGES)
    }
    assert not builders, f"build a Predictor through {ENTRY}: {sorted(builders)}"


def test_only_the_entry_measures_a_mask():
    measurers = {name for name in MODULES if _called_names(name) & MEASURING} - MEASURERS
    assert not measurers, f"measure a mask through {ENTRY}: {sorted(measurers)}"


# Calls that change a standard module's shared lists in place (sys.meta_path.insert(...)).
_MUTATORS = {"append", "insert", "extend", "remove", "pop", "clear", "__setitem__"}


def _standard_module_aliases(tree: ast.AST) -> set[str]:
    """The names a module binds to standard-library modules (``import sys``, ``import os.path
    as osp``, ``from importlib import machinery``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.partition(".")[0] in sys.stdlib_module_names:
                    names.add(alias.asname or alias.name.partition(".")[0])
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.partition(".")[0] in sys.stdlib_module_names:
                names |= {alias.asname or alias.name for alias in node.names}
    return names


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _patches_of_standard_modules(name: str, source: str | None = None) -> list[str]:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8") if source is None else source)
    standard = _standard_module_aliases(tree)
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
        patched = [t for t in targets if isinstance(t, ast.Attribute) and _root_name(t) in standard]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if node.func.attr in _MUTATORS and isinstance(owner, ast.Attribute):
                if _root_name(owner) in standard and _root_name(owner) != "os":
                    patched.append(owner)  # sys.meta_path.insert(...), not os.environ's
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr":
            if node.args and _root_name(node.args[0]) in standard:
                patched.append(node.args[0])
        found += [f"{name}:{node.lineno}: {ast.unparse(t)}" for t in patched]
    return found


def test_the_patch_check_sees_a_patch():
    source = "import pkgutil, sys\npkgutil.walk_packages = len\nsys.meta_path.insert(0, 1)\n"
    assert len(_patches_of_standard_modules(ENTRY, source)) == 2


def test_nothing_patches_a_standard_module():
    """Inside napari other plugins share the process: the package changes no attribute of
    pkgutil, sys (meta_path, path_hooks, modules' entries aside from its own imports) or any
    other standard module."""
    patches = [p for name in MODULES for p in _patches_of_standard_modules(name)]
    assert not patches, patches
