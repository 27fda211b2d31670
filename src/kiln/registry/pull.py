"""Pulling an image from a registry into the store, digests and all.

An index (or Docker manifest list) is resolved to the manifest of the platform asked for;
that manifest is stored byte for byte, so the image keeps the digest the registry gave it.
Layers are stored as the registry serves them (compressed): each is fetched at most once,
several at a time, its digest checked while it streams; a layer the store has is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from kiln.errors import KilnError
from kiln.oci.layer import HashingWriter
from kiln.oci.objects import (
    DOCKER_MANIFEST,
    INDEX,
    MANIFEST,
    MAX_DOCUMENT,
    Descriptor,
    InvalidObject,
    load_document,
    parse_config,
    parse_index,
    parse_manifest,
)
from kiln.platform import Platform
from kiln.reference import Reference
from kiln.registry.client import Progress, RegistryClient
from kiln.store import Store, StoredImage
from kiln.store.store import StoreError

DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = (MANIFEST, INDEX, DOCKER_MANIFEST, DOCKER_LIST)
_PARALLEL = 4

Output = Callable[[str], None]


class PullError(KilnError):
    """An image that cannot be pulled as asked."""


def pull_image(
    store: Store,
    reference: Reference,
    client: RegistryClient,
    *,
    platform: Platform | None = None,
    output: Output = lambda line: None,
    progress: Progress | None = None,
) -> StoredImage:
    """Fetch ``reference`` into ``store`` and tag it there; returns the stored image."""
    platform = platform or Platform("linux", "amd64")
    repository = reference.repository
    what = f"{reference}"
    found = client.get_manifest(repository, reference.digest or reference.tag, ACCEPT)
    try:
        document = load_document(found.data, f"{what}: manifest")
        media_type = document.get("mediaType") or found.media_type
        if media_type in (INDEX, DOCKER_LIST) or "manifests" in document:
            chosen = _choose(parse_index(found.data, f"{what}: index"), platform, reference)
            found = client.get_manifest(repository, chosen, ACCEPT)
        manifest = parse_manifest(found.data, f"{what}: manifest")
    except InvalidObject as err:
        raise PullError(str(err)) from None
    config = Descriptor.from_json(manifest["config"])
    layers = [Descriptor.from_json(d) for d in manifest["layers"]]
    if config.size > MAX_DOCUMENT:
        raise PullError(f"{what}: its config is larger than {MAX_DOCUMENT >> 20} MiB")
    with store.writing(), ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
        _fetch(store, client, repository, config, output, progress)
        try:
            parse_config(store.read_blob(config.digest), len(layers), f"{what}: config")
        except InvalidObject as err:
            raise PullError(str(err)) from None
        list(pool.map(lambda blob: _fetch(store, client, repository, blob, output, progress),
                      layers))  # fmt: skip
        tags = [reference] if reference.tag else []
        image = store.add_manifest(found.data, tags)
        store.remember_repo_digest(
            image.manifest_digest,
            Reference(reference.registry, reference.repository, digest=found.digest),
        )
    output(f"Digest: {found.digest}")
    return image


def _choose(index: list[Descriptor], platform: Platform, reference: Reference) -> str:
    """The digest of the manifest for ``platform`` (its variant, if it names one)."""
    offered = []
    for entry in index:
        wanted = entry.platform or {}
        offered.append(f"{wanted.get('os')}/{wanted.get('architecture')}")
        same = (wanted.get("os"), wanted.get("architecture")) == (
            platform.os, platform.architecture,
        )  # fmt: skip
        if same and (not platform.variant or wanted.get("variant") == platform.variant):
            return entry.digest
    raise PullError(
        f"{reference} has no image for {platform.os}/{platform.architecture}"
        f" (it has {', '.join(offered) or 'none'})"
    )


def _fetch(
    store: Store,
    client: RegistryClient,
    repository: str,
    blob: Descriptor,
    output: Output,
    progress: Progress | None,
) -> None:
    store.remember_source(blob.digest, client.host, repository)  # a push may mount it
    if store.has_blob(blob.digest):
        output(f"{blob.digest.removeprefix('sha256:')[:12]}: already exists")
        return

    def download(out: HashingWriter) -> None:  # the store checks the digest as it writes
        received = 0

        def write(chunk: bytes) -> None:
            nonlocal received
            received += len(chunk)
            if received > blob.size:  # a registry that sends more than it said: no more
                raise PullError(f"{blob.digest} from {client.host}/{repository} is larger "
                                f"than the {blob.size} bytes its manifest says")  # fmt: skip
            out.write(chunk)
            if progress is not None:
                progress(blob.digest, received, blob.size)

        client.get_blob(repository, blob.digest, write, verify=False)

    try:
        _, size = store.put_blob_stream(download, expected=blob.digest)
    except StoreError:
        raise PullError(f"{blob.digest} from {client.host}/{repository} has another digest: "
                        "the registry served other content") from None  # fmt: skip
    if size != blob.size:
        raise PullError(f"{blob.digest} from {client.host}/{repository} is {size} bytes, "
                        f"not the {blob.size} its manifest says")  # fmt: skip
    output(f"{blob.digest.removeprefix('sha256:')[:12]}: pull complete")
