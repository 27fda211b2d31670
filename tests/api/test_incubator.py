"""kiln.api.incubator.build: incubator 0.9's entry point, on real native builds."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from kiln.api import BuildError, Client, Image, NotSupported
from kiln.api.incubator import ConfigError, ResultImage, _spool, build
from kiln.engine.executor import Volume
from kiln.errors import KilnError
from kiln.outputs import export, parse_output
from tests.api.support import context
from tests.engines import DockerEngine
from tests.registries import Registry

pytestmark = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0,
    reason="building needs root and runc (.ci/run installs it)",
)


def rootfs(client: Client, image: Image, dest: Path) -> Path:
    """The image's root filesystem, written out as ``-o type=local`` writes it."""
    assert client.store is not None
    export(client.store, client.store.image(image.id), parse_output(f"type=local,dest={dest}"), ())
    return dest


def tar_context(files: dict[str, bytes], mode: str = "w:gz") -> io.BytesIO:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive.seek(0)
    return archive


def log_text(image: ResultImage) -> str:
    return "".join(entry.get("stream", "") for entry in image.logs)


def test_config_dicts_and_files_merge_in_order_then_the_arguments(
    client: Client, tmp_path: Path
) -> None:
    ctx = context(
        tmp_path,
        'FROM busybox:base\nARG A\nARG B\nARG C\nRUN echo "$A $B $C" > /abc\n',
    )
    team = tmp_path / "team.yaml"
    team.write_text(
        "config_name: team\nbuildargs:\n  B: yaml\n  C: yaml\nlabels:\n  team: web\n"
        "tags: [app:yaml]\n"
    )
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({"version": 1, "labels": {"host": "ci"}}))
    image = build(
        path=str(ctx),
        config=[
            {"buildargs": {"A": "dict", "B": "dict"}, "tags": ["app:dict"]},
            team,
            str(machine),
        ],
        buildargs={"C": "arg"},
        labels={"team": "api"},
        tag="app:arg",
        container_client=client,
    )
    assert (rootfs(client, image, tmp_path / "out") / "abc").read_text() == "dict yaml arg\n"
    assert image.labels == {"team": "api", "host": "ci"}  # the argument's value wins
    assert sorted(image.tags) == ["app:arg", "app:dict", "app:yaml"]  # lists concatenate
    assert client.images.get("app:arg") == image == client.images.get("app:yaml")


def test_result_is_a_kiln_image_with_incubators_id_and_logs(client: Client, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nLABEL stage=test\nRUN echo built\n")
    image = build(path=str(ctx), tag="result:1", rm=True, forcerm=True, container_client=client)
    assert isinstance(image, Image) and image.id.startswith("sha256:")
    assert image.tags == ["result:1"] and image.labels == {"stage": "test"}
    assert "built" in log_text(image) and "Successfully tagged result:1" in log_text(image)


def test_the_default_client_is_kilns_store(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert client.store is not None
    monkeypatch.setenv("KILN_ROOT", str(client.store.root))
    image = build(fileobj=io.BytesIO(b"FROM busybox:base\nRUN true\n"), tag="default:1")
    assert client.images.get("default:1") == image


def test_build_args_reach_run_and_an_unused_one_is_only_a_warning(
    client: Client, tmp_path: Path
) -> None:
    ctx = context(tmp_path, 'FROM busybox:base\nARG WHO=nobody\nRUN echo "hi $WHO" > /who\n')
    image = build(
        path=str(ctx), buildargs={"WHO": "kiln", "UNUSED": "x"}, container_client=client
    )  # incubator crashed on a build arg the Dockerfile never declared
    assert (rootfs(client, image, tmp_path / "out") / "who").read_text() == "hi kiln\n"
    assert "UNUSED" in log_text(image)


def test_volumes_are_seen_by_run_and_never_stored(client: Client, tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "data").mkdir(parents=True)
    (host / "extra.repo").write_text("[extra]\n")
    (host / "data" / "in").write_text("input\n")
    ctx = context(
        tmp_path,
        "FROM busybox:base\n"
        "RUN cat /etc/extra.repo /srv/data/in > /seen && echo back > /srv/out/result\n",
    )
    (host / "out").mkdir()
    image = build(
        path=str(ctx),
        volumes=[f"{host / 'extra.repo'}:/etc/extra.repo:ro", Volume(host / "out", "/srv/out")],
        config={"volumes": [f"{host / 'data'}:/srv/data"]},
        container_client=client,
    )
    out = rootfs(client, image, tmp_path / "out")
    assert (out / "seen").read_text() == "[extra]\ninput\n"
    assert (host / "out" / "result").read_text() == "back\n"
    assert not (out / "etc" / "extra.repo").exists() and not (out / "srv").exists()
    with pytest.raises(BuildError, match="Read-only file system"):
        build(path=str(ctx), volumes=[f"{host / 'extra.repo'}:/etc/extra.repo:ro",
                                      f"{host / 'data'}:/srv/data", f"{host}:/srv/out:ro"],
              container_client=client)  # fmt: skip
    with pytest.raises(ConfigError, match="expected source:destination"):
        build(path=str(ctx), volumes=f"{host}", container_client=client)
    (host / "out" / "result").unlink()
    relabelled = [f"{host / 'extra.repo'}:/etc/extra.repo:z", f"{host / 'data'}:/srv/data:Z",
                  f"{host / 'out'}:/srv/out:z"]  # fmt: skip
    build(path=str(ctx), volumes=relabelled, cache=False, container_client=client)
    assert (host / "out" / "result").read_text() == "back\n"  # z, Z: read-write, as rw
    with pytest.raises(BuildError, match="nowhere does not exist"):
        build(path=str(ctx), volumes=[f"{host}/nowhere:/srv"], container_client=client)


def test_a_context_tar_in_fileobj(client: Client, tmp_path: Path) -> None:
    archive = tar_context(
        {"docker/Dockerfile": b"FROM busybox:base\nCOPY app.txt /app.txt\n", "app.txt": b"app"}
    )
    image = build(
        fileobj=archive, custom_context=True, dockerfile="docker/Dockerfile", tag="ctx:1",
        container_client=client,
    )  # fmt: skip
    assert (rootfs(client, image, tmp_path / "out") / "app.txt").read_text() == "app"
    with pytest.raises(KilnError, match="not a usable context tar"):
        build(fileobj=io.BytesIO(b"not a tar"), custom_context=True, container_client=client)
    with pytest.raises(KilnError, match="custom_context needs fileobj"):
        build(path=str(tmp_path), custom_context=True, container_client=client)


def test_a_dockerfile_in_fileobj(client: Client, tmp_path: Path) -> None:
    image = build(
        fileobj=io.StringIO("FROM busybox:base\nRUN echo text > /t\n"), container_client=client
    )
    assert (rootfs(client, image, tmp_path / "text") / "t").read_text() == "text\n"
    image = build(
        fileobj=io.BytesIO(b"FROM busybox:base\nRUN echo bytes > /t\n"), container_client=client
    )
    assert (rootfs(client, image, tmp_path / "bytes") / "t").read_text() == "bytes\n"


def test_context_file_limit_is_where_the_context_spills_to_disk(
    client: Client, tmp_path: Path
) -> None:
    data = os.urandom(4096)
    assert _spool(io.BytesIO(data), 1024)._rolled  # past the limit: on disk
    assert not _spool(io.BytesIO(data), 8192)._rolled  # within it: in memory
    assert not _spool(io.BytesIO(data), 0)._rolled  # 0 (incubator's default): no limit
    spilled = _spool(io.BytesIO(data), 1024)
    assert spilled.read() == data
    archive = tar_context(
        {"Dockerfile": b"FROM busybox:base\nCOPY blob /blob\n", "blob": data}, mode="w"
    )
    image = build(
        fileobj=archive, custom_context=True, context_file_limit=1024, container_client=client
    )
    assert (rootfs(client, image, tmp_path / "out") / "blob").read_bytes() == data
    with pytest.raises(ConfigError, match="context_file_limit"):
        build(fileobj=io.BytesIO(b"FROM busybox:base\n"), context_file_limit=-1,
              container_client=client)  # fmt: skip


@pytest.mark.parametrize(
    "kwargs",
    [
        {"container_limits": {"memory": 64 << 20, "cpuquota": 50000}},
        {"config": {"container_limits": {"cpushares": "2", "blkioweight": 10}}},
        {"cache": object()},
        {"container_client": object()},
    ],
)
def test_what_the_native_backend_cannot_honour_is_refused(
    client: Client, tmp_path: Path, kwargs: dict[str, object]
) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN true\n")
    kwargs.setdefault("container_client", client)
    with pytest.raises(NotSupported):
        build(path=str(ctx), **kwargs)


def test_empty_layers_and_limits_are_the_default_build(client: Client, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN echo a > /a\nENV X=1\nRUN echo b > /b\n")
    image = build(path=str(ctx), layers=[], container_limits={}, container_client=client)
    assert len(image.attrs["RootFS"]["Layers"]) == 3  # the base and one per RUN


def test_cache_false_builds_every_step_afresh(client: Client, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN echo one > /one\n")
    first = build(path=str(ctx), container_client=client)
    assert "CACHED" not in log_text(first)
    assert "CACHED" in log_text(build(path=str(ctx), cache=True, container_client=client))
    assert "CACHED" in log_text(build(path=str(ctx), container_client=client))
    assert "CACHED" not in log_text(build(path=str(ctx), cache=False, container_client=client))


def test_a_failing_run_fails_the_build(client: Client, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN echo oops && exit 3\nRUN echo never\n")
    with pytest.raises(BuildError) as failed:  # incubator never checked RUN's exit code
        build(path=str(ctx), tag="broken:1", container_client=client)
    assert "failed with exit code 3: oops" in failed.value.msg
    assert list(failed.value.build_log)[-1]["error"] == failed.value.msg
    assert "broken:1" not in [t for i in client.images.list() for t in i.tags]


def test_config_pull_is_honoured_and_not_undone_by_the_default_argument(
    client: Client, tmp_path: Path, registry: Registry
) -> None:
    base = f"{registry.host}/lib/base"
    client.images.get("busybox:base").tag(base, "1")
    client.images.push(base, tag="1")
    ctx = context(tmp_path, f"FROM {base}:1\nRUN true\n")
    assert "pulling" not in log_text(build(path=str(ctx), container_client=client))
    pulled = build(path=str(ctx), pull=False, config={"pull": True}, container_client=client)
    assert f"pulling {base}:1" in log_text(pulled)


def test_bad_configs_are_clear_errors(client: Client, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("buildargs: [unclosed\n")
    cases = {
        str(broken): f"config {broken}: not YAML or JSON",
        str(tmp_path / "missing.yaml"): "No such file or directory",
        "/": "Is a directory",
    }
    for config, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            build(path=str(ctx), config=config, container_client=client)
    for bad, message in [
        ({"squash": True}, "config dict: unknown key 'squash'"),
        ({"config_name": "ci", "labels": ["a"]}, "config 'ci': labels cannot be"),
        ({"pull": "yes"}, "pull cannot be 'yes'"),
        ({"version": 2}, "version 2"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build(path=str(ctx), config=bad, container_client=client)
    listed = tmp_path / "list.yaml"
    listed.write_text("- pull\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        build(path=str(ctx), config=[{}, listed], container_client=client)
    with pytest.raises(KilnError, match="either path or fileobj"):
        build(container_client=client)


def test_a_docker_engine_as_container_client_builds_there(
    client: Client, tmp_path: Path, docker_engine: DockerEngine
) -> None:
    import docker

    archive = tmp_path / "busybox.tar"
    archive.write_bytes(b"".join(client.images.get("busybox:base").save(named=True)))
    docker_engine.run("load", "-i", str(archive))
    ctx = context(tmp_path, "FROM busybox:base\nARG WHO\nRUN echo $WHO > /who\n")
    engine = docker.DockerClient(base_url=docker_engine.host)
    try:
        image = build(path=str(ctx), tag="incubated:1", buildargs={"WHO": "docker"},
                      labels={"via": "engine"}, container_client=engine)  # fmt: skip
        assert any("Successfully built" in str(e.get("stream", "")) for e in image.logs)
        inspected = json.loads(docker_engine.run("image", "inspect", "incubated:1"))[0]
        assert inspected["Id"] == image.id and inspected["Config"]["Labels"]["via"] == "engine"
        assert docker_engine.run("run", "--rm", "incubated:1", "cat", "/who") == "docker\n"
        with pytest.raises(NotSupported, match="need kiln's native builder"):
            build(path=str(ctx), volumes=[f"{tmp_path}:/srv"], container_client=engine)
    finally:
        engine.close()
