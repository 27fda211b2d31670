"""kiln as a library, in the shape docker-py gave image scripts: ``Client().images``."""

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
