"""kiln as a library, in the shapes image scripts know: docker-py's ``Client().images``, and
atomic-reactor's ``DockerTasker`` (``kiln.api.tasker``, which imports docker-py on use)."""

from kiln.api.client import Client
from kiln.api.errors import (
    APIError,
    BuildError,
    ImageLoadError,
    ImageNotFound,
    InvalidArgument,
    NotFound,
)
from kiln.api.images import (
    Image,
    ImageCollection,
    NotSupported,
    RegistryData,
    inspect_dict,
)

__all__ = [
    "APIError",
    "BuildError",
    "Client",
    "Image",
    "ImageCollection",
    "ImageLoadError",
    "ImageNotFound",
    "InvalidArgument",
    "NotFound",
    "NotSupported",
    "RegistryData",
    "inspect_dict",
]
