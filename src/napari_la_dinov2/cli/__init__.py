"""The ``la-dinov2`` command line: one module per subcommand, all calling the same engine;
beside them ``segment_folder.py`` (segment's run over a folder of scans), ``engine_settings.py``
(the engine from segment's options, for one scan or a folder) and ``numbers.py`` (numeric options
bounded when parsed).

Each subcommand module exposes ``add_parser(subparsers)`` and ``run(args) -> int``; adding a
command is one line in :data:`SUBCOMMANDS`. Exit status: 0 success, 2 bad input (one line on
stderr, no traceback), 1 internal error (traceback), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import traceback

from ..errors import CancelledError, InputError

PROG = "la-dinov2"
# Subcommand modules of this package, in the order `--help` lists them.
SUBCOMMANDS = (
    "segment",
    "models",
    "train",
    "fewshot",
    "evaluate",
    "mesh",
    "refine",
)

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """An argparse error, raised instead of argparse's print-usage-and-exit."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage block then exits; we want one line and our own exit code.
    # Subparsers are created with the parent's class, so this covers every subcommand too.
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A value starting with '-' and a digit ("--center -1,5,5", "--seed -5") is a value, so
        # its own check answers ("outside the volume"), not "expected one argument". No option
        # of ours looks like a negative number, so nothing is lost.
        self._negative_number_matcher = re.compile(r"^-\d")

    def error(self, message: str):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Left-atrium segmentation of 3D LGE cardiac MRI with DINOv2 or CNN baselines.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def _fail(message: str) -> None:
    # One line, whatever the message holds, so scripts can grep it.
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status (never raises)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "_run", None) is None:
            parser.print_help(sys.stderr)
            return EXIT_INPUT
        return int(args._run(args) or 0)
    except UsageError as error:
        _fail(error)
        return EXIT_INPUT
    except InputError as error:
        _fail(error)
        return EXIT_INPUT
    except (KeyboardInterrupt, CancelledError):
        print(f"\n{PROG}: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exit_:  # --help / --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except Exception:
        traceback.print_exc()
        print(
            f"{PROG}: internal error (a bug); please report it with the traceback above.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
