"""Shared bits of the console scripts: nnU-Net path checks and one-line errors instead of tracebacks."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from nnunet_freetumor.config import FreeTumorConfigError


def require_env(*names: str) -> dict[str, str]:
    """nnU-Net's path variables, or exit with one line saying which to set."""
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        fail(
            f"set the nnU-Net path variable(s) {', '.join(missing)} (see nnU-Net's documentation/set_environment_"
            "variables.md)"
        )
    return {n: os.environ[n] for n in names}


def fail(msg: str, code: int = 2) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def run_cli(main: Callable[[], int | None]) -> int:
    """Run ``main``; our own configuration errors become one clear line and exit code 2."""
    try:
        return main() or 0
    except FreeTumorConfigError as e:
        fail(str(e))
    return 2
