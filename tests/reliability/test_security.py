"""What must not get in, or out: pickles from storage are never run without the opt-in, model names cannot reach
outside the repository, archives cannot write outside their target, credentials and payloads stay out of the logs,
and the predictor runs as uid 1000 on a read-only root filesystem."""

from __future__ import annotations

import functools
import http.server
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from support.models import export, mlp
from support.servers import REPO, free_port, start, start_predictor


class _Marker:
    """Unpickling this touches a file: proof that a pickle was (or was not) run."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("filename", ["model.pt", "model.pth"])
def test_a_pickle_in_storage_is_never_run(tmp_path, filename):
    import torch

    marker = tmp_path / "pwned"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    torch.save(
        {"state": _Marker(str(marker))}, model_dir / filename
    )  # what torch.save of a module looks like
    (model_dir / "plain.pkl").write_bytes(pickle.dumps(_Marker(str(marker))))
    result = subprocess.run(
        [sys.executable, "-m", "ferry", f"--model_dir={model_dir}", "--http_port=0", "--grpc_port=0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode != 0
    assert "TorchScript" in result.stderr or "torch" in result.stderr.lower(), result.stderr[-2000:]
    assert not marker.exists(), "a pickle from the model directory was unpickled"


def test_model_names_cannot_reach_outside_the_repository(tmp_path):
    repo = tmp_path / "repo"
    export(mlp(4, 8, 2), repo / "churn", "onnx", 4, 2)
    export(mlp(4, 8, 2), tmp_path / "secret", "onnx", 4, 2)  # a model beside the repository, not in it
    server = start_predictor(repo, tmp_path / "log")
    try:
        body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        for name in [
            "../secret",
            "..%2Fsecret",
            "%2e%2e%2fsecret",
            "churn/../../secret",
            "secret",
            "/secret",
        ]:
            for method, path, payload in [
                ("GET", f"/v2/models/{name}/ready", None),
                ("POST", f"/v2/models/{name}/infer", body),
                ("POST", f"/v1/models/{name}:predict", {"instances": [[1, 2, 3, 4]]}),
            ]:
                response = httpx.request(method, server.url + path, json=payload)
                assert response.status_code in (404, 405), (path, response.status_code, response.text)
        assert httpx.get(f"{server.url}/v1/models").json() == {"models": ["churn"]}
    finally:
        server.stop()


def test_archive_members_cannot_escape_the_download_directory(tmp_path):
    """A model archive over HTTP whose members climb out of the target (tar-slip): the model loads, and
    nothing is written outside the download directory."""
    from ferry.model import Predictor
    from ferry.settings import ModelSettings

    source = export(mlp(4, 8, 2), tmp_path / "src", "onnx", 4, 2)
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "model.tar.gz", "w:gz") as archive:
        archive.add(source / "model.onnx", arcname="model.onnx")
        evil = tarfile.TarInfo("../../escaped.txt")
        evil.size = 4
        archive.addfile(evil, io.BytesIO(b"evil"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cache = tmp_path / "a" / "b" / "cache"
    try:
        import asyncio

        uri = f"http://127.0.0.1:{server.server_address[1]}/model.tar.gz"
        predictor = Predictor("tarslip", uri, ModelSettings(warmup=False), cache_dir=cache)
        with pytest.raises(Exception) as info:
            asyncio.run(predictor.load())
        # kserve's storage refuses the whole archive (tarfile's "data" filter), and Ferry says so
        assert "Failed to unpack archive file" in str(info.value)
    finally:
        server.shutdown()
    escaped = [p for p in tmp_path.rglob("escaped.txt")]
    assert escaped == [], escaped


def test_no_credentials_or_payloads_in_logs_at_info(tmp_path):
    module = mlp(4, 8, 2)
    directory = export(module, tmp_path / "m", "onnx", 4, 2)
    # A storage URI with credentials that fails: its error is logged, its password must not be.
    port = free_port()
    failing = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferry",
            f"--model_dir=http://modeluser:Pa55w0rdInUri@127.0.0.1:{port}/model.onnx?X-Amz-Signature=SiGnAtUrE",
            "--http_port=0",
            "--grpc_port=0",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert failing.returncode != 0
    assert "127.0.0.1" in failing.stderr  # the failure is logged and names where it looked...
    assert (
        "Pa55w0rdInUri" not in failing.stderr and "SiGnAtUrE" not in failing.stderr
    )  # ...without the secret

    server = start_predictor(directory, tmp_path / "log", "--model_name=m", "--log_level=info")
    try:
        secret_row = [0.123456789, 98765.4321, 0.5, 0.25]
        headers = {"authorization": "Bearer TopSecretToken", "cookie": "session=CookieSecret"}
        body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": secret_row}]}
        assert httpx.post(f"{server.url}/v2/models/m/infer", json=body, headers=headers).status_code == 200
        bad = {
            "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": ["LeakyString"] * 4}]
        }
        assert httpx.post(f"{server.url}/v2/models/m/infer", json=bad, headers=headers).status_code == 400
        assert (
            httpx.post(f"{server.url}/v1/models/m:predict", json={"instances": [secret_row]}).status_code
            == 200
        )
    finally:
        server.stop()
    log = server.log()
    assert "model m ready" in log  # the log is there and at INFO...
    for secret in ["TopSecretToken", "CookieSecret", "0.123456789", "98765.4321", "LeakyString"]:
        assert secret not in log, f"{secret!r} reached the log"


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root to build the namespace"
)
def test_runs_as_uid_1000_on_a_read_only_root_filesystem(tmp_path):
    """As Kubernetes runs the image with readOnlyRootFilesystem and an emptyDir at /tmp: a private mount
    namespace where / is read-only and one directory is writable, the server running as uid 1000."""
    # /tmp itself, not $TMPDIR: uid 1000 must reach these whatever folder the tests run from, and the folders
    # moved aside by uncover_commands must not lie inside a folder it covers.
    writable = Path(tempfile.mkdtemp(prefix="ferry-emptydir-", dir="/tmp"))
    model_dir = Path(tempfile.mkdtemp(prefix="ferry-model-", dir="/tmp"))
    sides = Path(tempfile.mkdtemp(prefix="ferry-uncover-", dir="/tmp"))
    try:
        module = mlp(4, 8, 2)
        export(module, model_dir / "churn", "onnx", 4, 2)
        for path in [writable, model_dir, *model_dir.rglob("*")]:
            path.chmod(0o777 if path == writable else 0o755 if path.is_dir() else 0o644)
        http_port, grpc_port = free_port(), free_port()
        # An image keeps Python under /usr/local; here the interpreter, the environment and the checkout may sit
        # under folders uid 1000 cannot enter (a 0700 /root for pyenv, a private temporary folder for a clone).
        needed = [Path(sys.executable), Path(sys.base_prefix), Path(sys.prefix), REPO]
        uncover = uncover_commands(needed, sides)
        inner = " ".join(
            [
                uncover,
                f"mount --bind {writable} {writable} && mount -o remount,ro,bind / &&",
                f"exec setpriv --reuid 1000 --regid 1000 --clear-groups env HOME={writable} TMPDIR={writable}",
                f"FERRY_CACHE_DIR={writable}/models {sys.executable} -m ferry --model_dir={model_dir / 'churn'}",
                f"--model_name=churn --http_port={http_port} --grpc_port={grpc_port} --host=127.0.0.1",
            ]
        )
        probe = subprocess.run(
            ["unshare", "-m", "sh", "-c", "mount -o remount,ro,bind / && touch /ro-probe"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if "Read-only file system" not in probe.stderr:
            pytest.skip(f"cannot make / read-only here: {probe.stderr.strip()}")
        server = start(
            ["unshare", "-m", "sh", "-c", inner], tmp_path / "log", http_port=http_port, grpc_port=grpc_port
        )
        try:
            x = [[0.1, 0.2, 0.3, 0.4]]
            body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": x[0]}]}
            response = httpx.post(f"{server.url}/v2/models/churn/infer", json=body)
            assert response.status_code == 200, response.text
            import torch

            expected = module(torch.tensor(x)).detach().numpy()
            np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected.ravel(), atol=1e-5)
            status = Path(f"/proc/{_child_pid(server.process.pid)}/status").read_text()
            assert "Uid:\t1000\t1000\t1000\t1000" in status
        finally:
            assert server.stop() == 0
        assert "Read-only file system" not in server.log(), server.log()[-2000:]
    finally:
        shutil.rmtree(writable, ignore_errors=True)
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.rmtree(sides, ignore_errors=True)


def uncover_commands(paths: list[Path], sides: Path) -> str:
    """Shell commands, for a private mount namespace, that let any user read ``paths`` through folders only their
    owner may enter, without changing a permission on disk: each such folder is moved aside (a bind mount under
    ``sides``), covered with an empty world-readable tmpfs, and just the entries on the way to ``paths`` are bound
    back into it, read-only like the rest of the root filesystem."""
    entries: dict[Path, set[str]] = {}
    for path in paths:
        for resolved in {path.absolute(), path.resolve()}:
            for folder, child in zip(reversed(resolved.parents), resolved.parts[1:], strict=True):
                if not folder.stat().st_mode & 0o001:
                    entries.setdefault(folder, set()).add(child)
    commands = []
    # Outer folders first: an inner one is reached through the bind mounts made for the outer.
    for index, folder in enumerate(sorted(entries, key=lambda f: len(f.parts))):
        side = sides / str(index)
        side.mkdir()
        commands += [f"mount --bind {folder} {side}", f"mount -t tmpfs -o mode=755 tmpfs {folder}"]
        for child in sorted(entries[folder]):
            make = "mkdir" if (folder / child).is_dir() else "touch"
            commands += [
                f"{make} {folder / child}",
                f"mount --bind {side / child} {folder / child}",
                f"mount -o remount,ro,bind {folder / child}",
            ]
        commands.append(f"mount -o remount,ro {folder}")
    return "".join(f"{command} && " for command in commands)


def _child_pid(pid: int) -> int:
    """The server's pid: ``unshare`` execs ``sh``, which execs setpriv, which execs Python — or forks once."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return int(kids[0]) if kids else pid


def test_manifest_security_contexts_are_read_only_and_non_root():
    """Every container of Ferry's in the manifests runs non-root with a read-only root and a writable /tmp."""
    import yaml

    checked = 0
    for path in sorted((REPO / "k8s").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            for container, volumes in _ferry_containers(document):
                context = container.get("securityContext", {})
                where = f"{path.relative_to(REPO)}: {container.get('name')}"
                assert context.get("runAsNonRoot") is True, where
                assert context.get("readOnlyRootFilesystem") is True, where
                assert context.get("allowPrivilegeEscalation") is False, where
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                assert "/tmp" in mounts, f"{where}: no writable /tmp"
                assert any(v["name"] == mounts["/tmp"] and "emptyDir" in v for v in volumes), where
                checked += 1
    assert checked >= 5


def _ferry_containers(document):
    """(container, the volumes beside it) for every container running a Ferry image, at any depth."""
    if isinstance(document, dict):
        for key in ("containers",):
            if isinstance(document.get(key), list):
                for container in document[key]:
                    if isinstance(container, dict) and "ferry" in str(container.get("image", "")):
                        yield container, document.get("volumes", [])
        for value in document.values():
            yield from _ferry_containers(value)
    elif isinstance(document, list):
        for value in document:
            yield from _ferry_containers(value)
