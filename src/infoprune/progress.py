"""The one progress and logging mechanism: tqdm bars on stderr, the ``infoprune`` logger.

Library code never prints. Bars show when stderr is a terminal or when
``INFOPRUNE_PROGRESS=1``; ``INFOPRUNE_PROGRESS=0`` silences them everywhere.
"""

from __future__ import annotations

import logging
import os
import sys

from tqdm.auto import tqdm

logger = logging.getLogger("infoprune")


def progress_enabled() -> bool:
    setting = os.environ.get("INFOPRUNE_PROGRESS")
    if setting is not None:
        return setting not in ("0", "", "false", "no")
    return sys.stderr.isatty()


def progress_bar(total: int | None = None, desc: str = "", leave: bool = False, **kwargs) -> tqdm:
    """A tqdm bar (disabled when progress is off); use as the ``progress`` factory of methods."""
    return tqdm(total=total, desc=desc, leave=leave, disable=not progress_enabled(), dynamic_ncols=True, **kwargs)
