"""Where a build's image goes besides the store, as buildx spells it (``--output``, ``--load``).

``type=docker,dest=FILE.tar`` is a docker-archive (which is also an OCI layout),
``type=oci,dest=DIR`` an OCI image layout directory (``dest=FILE.tar``: the same as a tar),
``type=local,dest=DIR`` the image's root filesystem, and ``--load`` sends the image to a
Docker engine (``DOCKER_HOST`` or the default socket) through docker-py.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.engine.snapshots import Snapshots
from kiln.engine.snapshotter import mounted, snapshotter
from kiln.engine.workspace import workspace
from kiln.errors import KilnError
from kiln.store import Store, StoredImage
from kiln.store.transfer import save

TYPES = ("docker", "oci", "local")


class OutputError(KilnError):
    """An output that cannot be written or an engine that cannot be reached."""


@dataclass(frozen=True)
class Output:
    type: str
    dest: Path


def parse_output(spec: str) -> Output:
    """``type=oci,dest=out.tar``; a bare path means ``type=local,dest=PATH`` (as buildx)."""
    if "=" not in spec:
        return Output("local", Path(spec))
    fields = dict(field.partition("=")[::2] for field in spec.split(","))
    kind = fields.get("type", "")
    if kind not in TYPES:
        raise OutputError(f"unsupported output type {kind!r}: use one of {', '.join(TYPES)}")
    if not fields.get("dest"):
        raise OutputError(f"output {spec!r} needs dest=PATH")
    return Output(kind, Path(fields["dest"]))


def _name(image: StoredImage, tags: Sequence[str]) -> str:
    """What to save the image as: the build's first tag (it may have older ones), or its ID."""
    return tags[0] if tags else image.manifest_digest


def export(store: Store, image: StoredImage, output: Output, tags: Sequence[str] = ()) -> None:
    """Write ``image`` to ``output``; a partial result never stays behind."""
    name = _name(image, tags)
    archive = output.type == "docker" or (output.type == "oci" and output.dest.suffix == ".tar")
    if archive:
        partial = output.dest.with_name(output.dest.name + ".partial")
        try:
            with open(partial, "wb") as out:
                save(store, [name], out)
            partial.replace(output.dest)
        finally:
            partial.unlink(missing_ok=True)
    elif output.type == "oci":
        _layout_dir(store, name, output.dest)
    else:
        _rootfs(store, image, output.dest)


def _layout_dir(store: Store, name: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as archive:
        save(store, [name], archive)
        archive.seek(0)
        staging = Path(tempfile.mkdtemp(prefix=".kiln-", dir=dest.parent))
        try:
            with tarfile.open(fileobj=archive) as tar:
                tar.extractall(staging, filter="data")
            (staging / "manifest.json").unlink()
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _rootfs(store: Store, image: StoredImage, dest: Path) -> None:
    """The image's files, layers applied, copied out with owners, modes and links."""
    snapshots = Snapshots(store)
    lowers = snapshots.lowers([layer.digest for layer in image.layers])
    dest.mkdir(parents=True, exist_ok=True)
    with workspace(store.root, "export") as scratch:
        root = scratch.path
        upper, work, merged = root / "upper", root / "work", root / "merged"
        for path in (upper, work, merged):
            path.mkdir()
        with mounted(lowers, upper, work, merged, kind=snapshotter(store.root / "work")):
            result = subprocess.run(
                ["cp", "-a", "--", f"{merged}/.", str(dest)], capture_output=True, text=True
            )
    if result.returncode != 0:
        raise OutputError(f"cannot write the root filesystem to {dest}: {result.stderr.strip()}")


def load_into_docker(store: Store, image: StoredImage, tags: Sequence[str] = ()) -> list[str]:
    """``--load``: the image into the Docker engine ``DOCKER_HOST`` names; its tags back."""
    import docker  # a tenth of a second to import: only when loading
    from docker.errors import DockerException

    name = _name(image, tags)
    try:
        client = docker.from_env()
        with tempfile.TemporaryFile() as archive:
            save(store, [name], archive)
            archive.seek(0)
            loaded = client.images.load(archive)
    except DockerException as err:
        raise OutputError(f"cannot load the image into Docker: {err}") from None
    return [tag for item in loaded for tag in item.tags]
