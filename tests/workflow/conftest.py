"""Session fixtures of the buildroot tests: kiln's buildroot image in the private dockerd,
and how to start it privileged there."""

from __future__ import annotations

import pytest

from tests.buildroot import (
    BUILDROOT_TIMINGS,
    CACHE,
    Privileged,
    build_buildroot_image,
    privileged_mode,
)
from tests.engines import DockerEngine


@pytest.fixture(scope="session")
def buildroot_image(docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> str:
    """buildroot/Dockerfile built by kiln, offline, and loaded into the private dockerd."""
    tmp = tmp_path_factory.mktemp("buildroot")
    return build_buildroot_image(docker_engine, CACHE, tmp, timings=BUILDROOT_TIMINGS)


@pytest.fixture(scope="session")
def privileged(docker_engine: DockerEngine, buildroot_image: str) -> Privileged:
    return privileged_mode(docker_engine, buildroot_image)
