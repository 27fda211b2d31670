"""Where kiln keeps its state on disk."""

from __future__ import annotations

import os
from pathlib import Path


def default_root() -> Path:
    """The directory of kiln's embedded store and caches.

    ``$KILN_ROOT`` wins; otherwise ``/var/lib/kiln`` for root and
    ``$XDG_DATA_HOME/kiln`` (``~/.local/share/kiln``) for everyone else.
    """
    explicit = os.environ.get("KILN_ROOT")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/lib/kiln")
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "kiln"
