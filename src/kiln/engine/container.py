"""``kiln run``: an image's process in a throwaway container, isolated as RUN steps are."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from kiln.dockerfile.config import from_oci
from kiln.engine.runtime import ProcessSpec, run
from kiln.engine.snapshots import Snapshots
from kiln.engine.snapshotter import mounted, snapshotter
from kiln.errors import KilnError
from kiln.store import Store


def run_image(
    store: Store,
    name: str,
    command: list[str],
    network: str,
    output: Callable[[bytes], None],
) -> int:
    """Run ``command`` (or the image's entrypoint + cmd); returns the exit status."""
    image = store.image(name)
    config = from_oci(image.config.get("config") or {})
    args = [*(config.entrypoint or ()), *(command or config.cmd or ())]
    if not args:
        raise KilnError(f"{name}: no command given and the image has no CMD or ENTRYPOINT")
    snapshots = Snapshots(store)
    lowers = [snapshots.get(layer.digest) for layer in image.layers]
    (store.root / "work").mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=store.root / "work"))
    try:
        upper, work, merged = scratch / "upper", scratch / "work", scratch / "merged"
        for path in (upper, work, merged):
            path.mkdir(mode=0o755)
        with mounted(lowers, upper, work, merged, kind=snapshotter(store.root / "work")):
            spec = ProcessSpec(args, config.env, config.working_dir or "/", config.user, network)
            return run(merged, spec, scratch / "bundle", output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
