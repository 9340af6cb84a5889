"""docs/deploy-kubernetes.md's walkthroughs are what the pod tests play: the overlays they apply are the ones
tests/pods renders, the Secrets they apply are every template in k8s/secrets, and the bucket comes from
``ferry bucket``, the tree the pod tests upload."""

from __future__ import annotations

import re

from support.servers import REPO

DOC = REPO / "docs" / "deploy-kubernetes.md"


def walkthrough() -> str:
    text = DOC.read_text()
    start = text.index("## From zero, per target")
    return text[start : text.index("\n## ", start + 1)]


def test_the_overlays_applied_are_the_ones_the_pod_tests_render():
    applied = set(re.findall(r"kubectl apply -k k8s/overlays/([a-z0-9-]+)", walkthrough()))
    rendered = {
        name for path in (REPO / "tests" / "pods").glob("test_*.py")
        for name in re.findall(r'render\("([a-z0-9-]+)"\)', path.read_text())
    }  # fmt: skip
    assert applied == rendered == {"kserve", "seldon-v1", "seldon-v2"}


def test_every_secret_template_is_applied_somewhere():
    applied = set(re.findall(r"-f (k8s/secrets/[a-z0-9-]+\.yaml)", walkthrough()))
    templates = {str(p.relative_to(REPO)) for p in (REPO / "k8s" / "secrets").glob("*.yaml")}
    assert applied == templates


def test_the_bucket_is_the_one_the_pod_tests_upload():
    text = walkthrough()
    assert "ferry bucket --out bucket" in text
    assert "bucket.write(" in (REPO / "tests" / "pods" / "world.py").read_text()
    from ferry_tools.demo.bucket import LAYOUT

    listed = set(re.findall(r"`(s3://[^`]+)`", text))
    for uri in LAYOUT:
        prefix, _, leaf = uri.rpartition("/")
        assert uri in listed or any(f"{prefix}/" in item or item == f".../{leaf}" for item in listed), (
            f"{uri} is not in the walkthrough's table"
        )
