"""kiln as a library, in the shapes image scripts know: docker-py's ``Client().images``, and
atomic-reactor's ``DockerTasker`` (``kiln.api.tasker``, which imports docker-py on use)."""

from kiln.api.client import Client
from kiln.api.images import (
    BuildError,
    Image,
    ImageCollection,
    ImageNotFound,
    NotSupported,
    RegistryData,
    inspect_dict,
)

__all__ = [
    "BuildError",
    "Client",
    "Image",
    "ImageCollection",
    "ImageNotFound",
    "NotSupported",
    "RegistryData",
    "inspect_dict",
]
