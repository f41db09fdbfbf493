"""What every `python -m cyclejax.<command>` shares: flag parsing and user errors as one line.

`define_config` defines the `--config` flag; `run(main)` is `absl.app.run(main)` except that a bad flag, an unknown or mistyped
`--config.KEY`, a config file that does not load, or a `UserError` raised by the library
prints one line `error: ...` on stderr and exits with code 2; a `NonFiniteError` exits with
code 3. Tracebacks are kept for real bugs. Libraries' INFO lines (Orbax, TensorFlow) are
hidden unless `--verbosity` is given (see also `cyclejax/__init__.py`). Every command keeps
freed host memory for reuse (`cyclejax.host_memory`).
"""
from __future__ import annotations

import re
import sys
from typing import Callable

import ml_collections
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from cyclejax import host_memory
from cyclejax.errors import NonFiniteError, UserError


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _flag_message(error: Exception, argv: list[str]) -> str:
    """One line for an exception raised while reading flags or the config file."""
    text = str(error).replace("\\'", "'").replace("\\n", "\n").strip().strip("'\"")
    unknown = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', text) or re.fullmatch(r"'?(\w+)'?", text)
    if isinstance(error, (AttributeError, KeyError)) and unknown:
        key = unknown.group(unknown.lastindex)
        flag = next((a.split("=")[0] for a in argv if a.split("=")[0].endswith(f".{key}")), f"--config.{key}")
        hint = f'; did you mean "{unknown.group(1)}"?' if unknown.lastindex == 2 else ""
        return f"{flag}: the config has no key '{key}'{hint} (--helpfull lists the keys)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    prefix = re.match(r"(flag --[^:]+): ", lines[0]) if lines else None
    last = [line for line in lines if re.match(r"\w+(Error|Exception): |\[Errno", line)]
    if len(lines) > 1 and last:
        cause = re.sub(r"^\w+(Error|Exception): ", "", last[-1])
        head = prefix.group(1) if prefix else lines[0].rstrip(":")
        return f"{head}: {cause}"
    return " ".join(text.split())


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with any failure reported as one line and exit code 2."""
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - flags, config files and overrides raise many kinds
        fail(_flag_message(e, argv))


def define_config(name: str, default: str, help_string: str):
    """`config_flags.DEFINE_config_file`, with a mistyped `--config.KEY` reported as one line.

    (ml_collections resolves the `--config.KEY` overrides while defining the flag, before
    `run` parses anything.)
    """
    try:
        return config_flags.DEFINE_config_file(name, default, help_string)
    except Exception as e:  # noqa: BLE001 - an unknown key raises KeyError/AttributeError here
        fail(_flag_message(e, sys.argv))


def config_value(holder) -> ml_collections.ConfigDict:
    """The loaded config of a `define_config` flag; a config file that did not load is one line."""
    try:
        config = holder.value
        config.keys()  # a config that failed to load raises on first use
        return config
    except Exception as e:  # noqa: BLE001 - ml_collections defers a failed load to here
        fail(_flag_message(e, sys.argv))


def run(main: Callable[[list[str]], None]) -> None:
    """`app.run(main)` with user errors as one line on stderr (exit 2; non-finite losses: exit 3)."""

    def guarded(argv):
        host_memory.keep_freed_memory()
        if not flags.FLAGS["verbosity"].present:
            absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax and TensorFlow log INFO lines
        try:
            main(argv)
        except UserError as e:
            fail(str(e))
        except NonFiniteError as e:
            fail(str(e), code=3)

    app.run(guarded, flags_parser=parse_flags)
