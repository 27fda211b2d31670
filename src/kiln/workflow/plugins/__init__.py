"""The generic plugins kiln ships, one small module per concern."""

from typing import Any

from kiln.workflow.plugin import Plugin
from kiln.workflow.plugins.base_image import ChangeFromInDockerfile, PullBaseImage
from kiln.workflow.plugins.build import Build
from kiln.workflow.plugins.checks import AssertLabels, TestBuiltImage
from kiln.workflow.plugins.dockerfile_edits import (
    AddDockerfile,
    AddLabelsInDockerfile,
    InjectFiles,
)
from kiln.workflow.plugins.outputs import Compress, RemoveBuiltImage, StoreMetadata
from kiln.workflow.plugins.squash import Squash
from kiln.workflow.plugins.tags import TagAndPush, TagByLabels, TagFromConfig

BUILTIN_PLUGINS: tuple[type[Plugin[Any, Any]], ...] = (
    PullBaseImage, ChangeFromInDockerfile, AddLabelsInDockerfile, AddDockerfile, InjectFiles,
    Build, Squash, AssertLabels, TestBuiltImage, TagFromConfig, TagByLabels, TagAndPush,
    Compress, StoreMetadata, RemoveBuiltImage,
)  # fmt: skip

__all__ = [
    "BUILTIN_PLUGINS",
    "AddDockerfile",
    "AddLabelsInDockerfile",
    "AssertLabels",
    "Build",
    "ChangeFromInDockerfile",
    "Compress",
    "InjectFiles",
    "PullBaseImage",
    "RemoveBuiltImage",
    "Squash",
    "StoreMetadata",
    "TagAndPush",
    "TagByLabels",
    "TagFromConfig",
    "TestBuiltImage",
]
