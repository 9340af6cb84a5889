"""The pod tests' world (plain functions, used by conftest.py and the tests): the overlays rendered by
kustomize, an S3-protocol server holding the demo artifacts at the URIs the manifests name, and the images
``make images`` built. Run by ``make image-test`` (scripts/image-test.sh), which builds the images first."""

from __future__ import annotations

import contextlib
from pathlib import Path

from cluster import Cluster
from ferry_tools.demo import bucket
from support import kustomize
from support.servers import start

REPO = Path(__file__).resolve().parents[2]

S3_KEY, S3_SECRET = "ferry-pod-test", "ferry-pod-test-secret"
VERSION = next(
    line.split('"')[1]
    for line in (REPO / "pyproject.toml").read_text().splitlines()
    if line.startswith("version")
)


def render(target: str) -> list[dict]:
    """``kubectl kustomize k8s/overlays/<target>``: what ``kubectl apply -k`` would send."""
    return list(kustomize.render(f"overlays/{target}"))


class S3Server:
    """moto's S3 server on the cluster's gateway, behind the Service the Secrets name."""

    def __init__(self, cluster: Cluster, endpoint: str, workdir: Path):
        from urllib.parse import urlparse

        parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        self.host, self.port = cluster.external([parsed.hostname], parsed.port or 80)
        cluster.wait_for_gateway()
        command = [str(REPO / ".venv/bin/python"), "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        # moto answers GET / with its bucket list once it serves.
        self.server = start(command, workdir / "s3.log", http_port=self.port, ready_path="/", host=self.host)
        self.url = self.server.url

    def upload(self, layout: dict[str, Path]) -> None:
        import boto3

        client = boto3.client(
            "s3", endpoint_url=self.url, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )  # fmt: skip
        buckets = set()
        for uri, folder in layout.items():
            bucket, _, prefix = uri.removeprefix("s3://").partition("/")
            if bucket not in buckets:
                client.create_bucket(Bucket=bucket)
                buckets.add(bucket)
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")

    def stop(self) -> None:
        self.server.stop()


def s3_endpoint(secrets: dict[str, dict]) -> str:
    """The S3 address every Secret template names (they must agree: one object store)."""
    endpoints = set()
    for secret in secrets.values():
        annotation = (secret["metadata"].get("annotations") or {}).get("serving.kserve.io/s3-endpoint")
        if annotation:
            endpoints.add(annotation)
        for key, value in (secret.get("stringData") or {}).items():
            if key in ("AWS_ENDPOINT_URL", "RCLONE_CONFIG_S3_ENDPOINT"):
                endpoints.add(value.split("://", 1)[-1])
    assert len(endpoints) == 1, f"the Secret templates name different S3 endpoints: {endpoints}"
    return endpoints.pop()


@contextlib.contextmanager
def cluster_with_s3(tmp_path_factory, secrets, demo, docs: list[dict]):
    """A fresh cluster holding the rendered ``docs``' ConfigMaps, with the S3 server up and the demo artifacts
    uploaded."""
    workdir = tmp_path_factory.mktemp("cluster")
    with Cluster(workdir, VERSION) as cluster:
        cluster.configmaps = {
            (d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "ConfigMap"
        }
        s3 = S3Server(cluster, s3_endpoint(secrets), workdir)
        try:
            # What the manifests' URIs hold: the tree `ferry bucket` writes, which the docs tell users to upload.
            s3.upload(bucket.write(demo, workdir / "bucket"))
            cluster.s3 = s3
            yield cluster
        finally:
            s3.stop()
