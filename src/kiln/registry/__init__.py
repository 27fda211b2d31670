"""Registries over the OCI distribution API: credentials, a client, push."""

from kiln.registry.client import Manifest, RegistryClient, RegistryError, is_loopback
from kiln.registry.credentials import (
    Credentials,
    CredentialsError,
    credentials_for,
    remove_login,
    save_login,
)
from kiln.registry.pull import PullError, pull_image
from kiln.registry.push import COMPRESSIONS, FORMATS, Pushed, PushError, push_image

__all__ = [
    "COMPRESSIONS",
    "FORMATS",
    "Credentials",
    "CredentialsError",
    "Manifest",
    "PullError",
    "PushError",
    "Pushed",
    "RegistryClient",
    "RegistryError",
    "credentials_for",
    "is_loopback",
    "pull_image",
    "push_image",
    "remove_login",
    "save_login",
]
