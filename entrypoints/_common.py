"""Shared bits of the console scripts: one-line errors instead of tracebacks (nnU-Net's folders: ``env``)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from nnunet_freetumor.config import FreeTumorConfigError


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
