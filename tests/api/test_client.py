"""kiln.api.Client: docker-py's images API over the native store, on real builds."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from kiln.api import BuildError, Client, ImageNotFound, NotSupported
from tests.api.support import context
from tests.engines import DockerEngine
from tests.registries import Registry

pytestmark = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0,
    reason="building needs root and runc (.ci/run installs it)",
)


def gzipped_context(files: dict[str, bytes]) -> io.BytesIO:
    """A build context as a gzipped tar, for ``custom_context=True``."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive.seek(0)
    return archive


def test_build_from_a_path_with_docker_py_arguments(client: Client, tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base\nARG WHO\nCOPY a.txt /a.txt\nRUN echo $WHO > /who.txt\n",
        {"a.txt": "a"},
    )
    (ctx / "Other.dockerfile").write_text((ctx / "Dockerfile").read_text())
    image, logs = client.images.build(
        path=str(ctx), tag="app:1", buildargs={"WHO": "api"}, labels={"team": "kiln"},
        target="", dockerfile="Other.dockerfile", nocache=True, rm=True, forcerm=True,
        network_mode="none", isolation="default",
    )  # fmt: skip
    lines = [entry["stream"] for entry in logs if "stream" in entry]
    assert any(line.startswith("Successfully built") for line in lines)
    assert image.tags == ["app:1"] and image.labels == {"team": "kiln"}
    assert image == client.images.get("app:1")
    assert image.attrs["Id"] == image.id and image.short_id == image.id[:19]


def test_build_target_skips_a_failing_stage(client: Client, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base AS good\nRUN true\nFROM busybox:base\nRUN exit 3\n")
    image, _ = client.images.build(path=str(ctx), target="good", tag="good:1")
    assert image.tags == ["good:1"]
    with pytest.raises(BuildError) as failed:
        client.images.build(path=str(ctx), tag="bad:1")
    assert "exit code 3" in failed.value.msg
    assert list(failed.value.build_log)[-1]["error"] == failed.value.msg
    with pytest.raises(ImageNotFound):
        client.images.get("bad:1")


def test_build_from_a_fileobj_dockerfile_and_a_custom_context(
    client: Client, tmp_path: Path
) -> None:
    image, _ = client.images.build(fileobj=io.BytesIO(b"FROM busybox:base\nRUN true\n"),
                                   tag="lone:1")  # fmt: skip
    assert image.tags == ["lone:1"]
    archive = gzipped_context({"Dockerfile": b"FROM busybox:base\nCOPY f /f\n", "f": b"ctx"})
    image, _ = client.images.build(fileobj=archive, custom_context=True, encoding="gzip",
                                   tag="ctx:1")  # fmt: skip
    assert next(h["CreatedBy"] for h in image.history()).startswith("COPY f /f")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"container_limits": {"memory": 64 << 20, "cpuquota": 50000}},
        {"network_mode": "container:x"},
    ],
)
def test_arguments_the_native_backend_cannot_honour_are_refused(
    client: Client, tmp_path: Path, kwargs: dict[str, object]
) -> None:
    ctx = context(tmp_path, "FROM busybox:base\n")
    with pytest.raises(NotSupported):
        client.images.build(path=str(ctx), **kwargs)


def test_proxies_from_the_docker_config_become_build_args(client: Client, tmp_path: Path) -> None:
    config = tmp_path / "docker-config" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"proxies": {"default": {"httpProxy": "http://proxy:3128"}}}))
    ctx = context(tmp_path, 'FROM busybox:base\nRUN echo "$HTTP_PROXY" > /proxy.txt\n')
    client.images.build(path=str(ctx), tag="proxied:1")
    out = tmp_path / "out"
    from kiln.outputs import export, parse_output

    export(client.store, client.store.image("proxied:1"), parse_output(f"type=local,dest={out}"),
           ())  # fmt: skip
    assert (out / "proxy.txt").read_text() == "http://proxy:3128\n"
    client.images.build(path=str(ctx), tag="direct:1", use_config_proxy=False,
                                   nocache=True)  # fmt: skip
    export(client.store, client.store.image("direct:1"),
           parse_output(f"type=local,dest={tmp_path / 'out2'}"), ())  # fmt: skip
    assert (tmp_path / "out2" / "proxy.txt").read_text() == "\n"


def test_list_tag_save_load_remove_prune(
    client: Client, tmp_path: Path, docker_engine: DockerEngine
) -> None:
    ctx = context(tmp_path, 'FROM busybox:base\nLABEL tier=web\nCMD ["echo", "saved"]\n')
    image, _ = client.images.build(path=str(ctx), tag="web:1")
    assert image.tag("web", "2") and sorted(client.images.get("web:2").tags) == ["web:1", "web:2"]
    assert [i.id for i in client.images.list(name="web")] == [image.id]
    assert [i.id for i in client.images.list(filters={"label": "tier=web"})] == [image.id]
    archive = tmp_path / "web.tar"
    archive.write_bytes(b"".join(image.save(named=True)))
    docker_engine.run("load", "-i", str(archive))
    assert docker_engine.run("run", "--rm", "--network", "none", "web:1") == "saved\n"
    client.images.remove("web:2")
    client.images.remove("web:1")
    with pytest.raises(ImageNotFound):
        client.images.get("web:1")
    loaded = client.images.load(archive.read_bytes())
    assert [i.id for i in loaded] == [image.id]
    # a rebuild under the same tag leaves the old image dangling, for prune to take
    (ctx / "Dockerfile").write_text("FROM busybox:base\nRUN echo v1 > /v\n")
    old, _ = client.images.build(path=str(ctx), tag="web:1")
    (ctx / "Dockerfile").write_text("FROM busybox:base\nRUN echo v2 > /v\n")
    client.images.build(path=str(ctx), tag="web:1")
    assert old.id in [i.id for i in client.images.list(filters={"dangling": True})]
    pruned = client.images.prune()
    assert pruned["SpaceReclaimed"] > 0
    assert old.id not in [i.id for i in client.images.list()]


def test_pull_push_and_registry_data(client: Client, tmp_path: Path, registry: Registry) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN echo up > /up.txt\n")
    image, _ = client.images.build(path=str(ctx), tag=f"{registry.host}/api/app:1")
    answer = client.images.push(f"{registry.host}/api/app", tag="1")
    digest = json.loads(answer.strip().splitlines()[-1])["aux"]["Digest"]
    data = client.images.get_registry_data(f"{registry.host}/api/app:1")
    assert data.id == digest and data.has_platform("linux/amd64")
    other = Client(root=tmp_path / "other-store")
    pulled = other.images.pull(f"{registry.host}/api/app", tag="1")
    assert pulled.id == image.id


def test_extra_hosts_and_shm_size_reach_run_steps(client: Client, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN grep db /etc/hosts > /hosts.txt"
                            " && df -k /dev/shm | tail -1 > /shm.txt\n")  # fmt: skip
    client.images.build(path=str(ctx), tag="hosts:1", extra_hosts={"db": "10.0.0.2"},
                        shmsize=8 << 20)  # fmt: skip
    out = tmp_path / "out"
    from kiln.outputs import export, parse_output

    export(client.store, client.store.image("hosts:1"), parse_output(f"type=local,dest={out}"),
           ())  # fmt: skip
    assert (out / "hosts.txt").read_text() == "10.0.0.2\tdb\n"
    assert (out / "shm.txt").read_text().split()[1] == "8192"  # 1K-blocks
    # the hosts file the step saw was the runtime's: the image has none (busybox has none)
    assert not (out / "etc" / "hosts").exists()
