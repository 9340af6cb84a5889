#!/usr/bin/env python3
"""Regenerate the strict JSON Schemas in k8s/schemas/ from the upstream CRDs pinned in its SOURCES.json.

    python scripts/k8s_schemas.py                    # download the CRDs from GitHub, rewrite k8s/schemas/
    python scripts/k8s_schemas.py --crd-dir DIR      # use local copies, looked up by their upstream file name
    python scripts/k8s_schemas.py --check [...]      # write nothing; exit 1 if a committed file differs

Every CRD is checked against the sha256 in SOURCES.json before it is used, so a schema can only come from
the pinned upstream commit. Each served version of a CRD gives one `{kind}_{version}.json` (lower case, the
layout kubeconform uses), strict the way the API server is: see k8s/schemas/README.md.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "k8s" / "schemas"
SOURCES_FILE = "SOURCES.json"
URL = "https://github.com/{repo}/raw/{commit}/{path}"
DOWNLOAD_TIMEOUT_S = 120
SCHEMA_ID = "https://schemas.local/{group}/{name}"
DRAFT_07 = "http://json-schema.org/draft-07/schema#"

# CRDs declare only `metadata: {type: object}`: the API server checks ObjectMeta itself. These are its rules
# for what a manifest may set (names are DNS subdomains, namespaces DNS labels, label and annotation keys
# qualified names, label values at most 63 characters); the server-set fields are typed and nothing more.
METADATA: dict[str, Any] = {
    "additionalProperties": False,
    "properties": {
        "annotations": {
            "additionalProperties": {"type": "string"},
            "propertyNames": {
                "pattern": r"^([A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?"
                r"(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*/)?"
                r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
            },
            "type": "object",
        },
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "deletionTimestamp": {"type": "string"},
        "finalizers": {"items": {"type": "string"}, "type": "array"},
        "generateName": {"type": "string"},
        "generation": {"type": "integer"},
        "labels": {
            "additionalProperties": {
                "maxLength": 63,
                "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$",
                "type": "string",
            },
            "propertyNames": {
                "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
            },
            "type": "object",
        },
        "managedFields": {"items": {"type": "object"}, "type": "array"},
        "name": {
            "maxLength": 253,
            "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
            "type": "string",
        },
        "namespace": {"maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "type": "string"},
        "ownerReferences": {
            "items": {
                "additionalProperties": False,
                "properties": {
                    "apiVersion": {"type": "string"},
                    "blockOwnerDeletion": {"type": "boolean"},
                    "controller": {"type": "boolean"},
                    "kind": {"type": "string"},
                    "name": {"type": "string"},
                    "uid": {"type": "string"},
                },
                "required": ["apiVersion", "kind", "name", "uid"],
                "type": "object",
            },
            "type": "array",
        },
        "resourceVersion": {"type": "string"},
        "selfLink": {"type": "string"},
        "uid": {"type": "string"},
    },
    "required": ["name"],
    "type": "object",
}

# A Helm template's actions: a line that is nothing but actions ({{- if }}, {{- end }}, {{- toYaml . }}) goes;
# an action inside a value (only CRD labels and annotations in the charts used here) is blanked.
_HELM_ACTION_LINE = re.compile(r"^\s*(\{\{.*?\}\}\s*)+$")
_HELM_ACTION = re.compile(r"\{\{.*?\}\}")


class SourceError(Exception):
    """An upstream CRD missing, differing from its pin, or yielding other schemas than SOURCES.json lists."""


def load_sources(schemas_dir: Path) -> list[dict[str, Any]]:
    return json.loads((schemas_dir / SOURCES_FILE).read_text())


def read_crd(source: dict[str, Any], crd_dir: Path | None) -> bytes:
    """The upstream file of `source`, from `crd_dir` or GitHub at the pinned commit, sha256 checked."""
    name = Path(source["path"]).name
    if crd_dir is None:
        with urllib.request.urlopen(URL.format(**source), timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    else:
        # searched below crd_dir too, so a folder laid out per project (kserve/, seldon-v2/, ...) works
        found = sorted(crd_dir.rglob(name))
        if not found:
            raise SourceError(
                f"{name}: not under {crd_dir} ({source['repo']} {source['tag']} {source['path']})"
            )
        if len(found) > 1:
            raise SourceError(f"{name}: {len(found)} copies under {crd_dir}: {', '.join(map(str, found))}")
        data = found[0].read_bytes()
    verify(source, data)
    return data


def verify(source: dict[str, Any], data: bytes) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != source["sha256"]:
        raise SourceError(
            f"{Path(source['path']).name}: sha256 {digest} ({len(data)} bytes), SOURCES.json pins "
            f"{source['sha256']} ({source['bytes']} bytes) for {source['repo']} {source['tag']} "
            f"{source['path']}"
        )


def strip_helm(text: str) -> str:
    lines = [line for line in text.splitlines(keepends=True) if not _HELM_ACTION_LINE.match(line)]
    return _HELM_ACTION.sub("", "".join(lines))


def parse_crd(data: bytes, helm: bool = False) -> dict[str, Any]:
    text = data.decode()
    return yaml.safe_load(strip_helm(text) if helm else text)


_LATE_FLAGS = re.compile(r"^\^(\(\?[a-z]+\))")


def python_pattern(pattern: str) -> str:
    """Go's regexp takes inline flags anywhere (the PrometheusRule CRD has ``^(?i)(abort|warn)?$``); Python's re,
    which jsonschema validates with, only at the start: ``(?i)^(abort|warn)?$`` means the same there."""
    return _LATE_FLAGS.sub(r"\1^", pattern)


def strict(node: dict[str, Any]) -> dict[str, Any]:
    """One openAPIV3Schema node as a strict JSON Schema node, recursing into the subschemas."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "description":
            continue
        if key == "properties":
            value = {name: strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            value = strict(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            value = [strict(sub) for sub in value]
        elif key == "pattern" and isinstance(value, str):
            value = python_pattern(value)
        # everything else (default, enum, x-kubernetes-validations, ...) is data, not a schema: kept as is
        out[key] = value
    # The API server prunes fields a structural schema does not declare: a typo'd field in a manifest is
    # silently dropped, so here it is an error. x-kubernetes-preserve-unknown-fields is the opt-out.
    if (
        out.get("type") == "object"
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    # controller-gen writes the anyOf itself; a hand-written CRD may carry only the extension.
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if out.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def crd_schemas(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """File name -> strict schema, for each served version of a CRD."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    schemas = {}
    for version in spec["versions"]:
        if not version.get("served"):
            continue
        name = f"{kind.lower()}_{version['name']}.json"
        schema = strict(version["schema"]["openAPIV3Schema"])
        schema["properties"].update(
            apiVersion={"enum": [f"{group}/{version['name']}"], "type": "string"},
            kind={"enum": [kind], "type": "string"},
            metadata=copy.deepcopy(METADATA),
        )
        top = ["apiVersion", "kind", "metadata"]
        schema["required"] = top + [field for field in schema.get("required", []) if field not in top]
        schema["$id"] = SCHEMA_ID.format(group=group, name=name)
        schema["$schema"] = DRAFT_07
        schema["x-kubernetes-group-version-kind"] = [
            {"group": group, "kind": kind, "version": version["name"]}
        ]
        schema["x-kubernetes-scope"] = spec["scope"]
        schemas[name] = schema
    return schemas


def render(schema: dict[str, Any]) -> bytes:
    # Compact and sorted, no trailing newline: the files are data for validators, diffed by this script.
    return json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()


def generate(sources: list[dict[str, Any]], crd_dir: Path | None) -> dict[str, bytes]:
    """File name -> content, for every schema SOURCES.json lists."""
    files: dict[str, bytes] = {}
    for source in sources:
        crd = parse_crd(read_crd(source, crd_dir), helm=source.get("helm", False))
        schemas = crd_schemas(crd)
        if crd["spec"]["names"]["kind"] != source["kind"] or sorted(schemas) != sorted(source["schemas"]):
            raise SourceError(
                f"{Path(source['path']).name}: yields {crd['spec']['names']['kind']} {sorted(schemas)}, "
                f"SOURCES.json lists {source['kind']} {sorted(source['schemas'])}"
            )
        files.update((name, render(schema)) for name, schema in schemas.items())
    return files


def committed(schemas_dir: Path) -> set[str]:
    return {path.name for path in schemas_dir.glob("*.json") if path.name != SOURCES_FILE}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--crd-dir",
        type=Path,
        help="local copies of the upstream CRDs, found by file name (default: download)",
    )
    parser.add_argument(
        "--schemas", type=Path, default=SCHEMAS, help="the schema folder and its SOURCES.json"
    )
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed files, write nothing"
    )
    args = parser.parse_args(argv)

    try:
        files = generate(load_sources(args.schemas), args.crd_dir)
    except (SourceError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    stale = sorted(committed(args.schemas) - set(files))
    if args.check:
        bad = 0
        for name, content in sorted(files.items()):
            path = args.schemas / name
            state = "identical" if path.is_file() and path.read_bytes() == content else "DIFFERS"
            bad += state != "identical"
            print(f"{state:9}  {name}")
        for name in stale:
            print(f"{'STALE':9}  {name} (no source in {SOURCES_FILE})")
        print(f"{len(files) - bad} of {len(files)} identical" + (f", {len(stale)} stale" if stale else ""))
        return 1 if bad or stale else 0

    for name, content in sorted(files.items()):
        (args.schemas / name).write_bytes(content)
        print(f"wrote    {name}")
    for name in stale:
        (args.schemas / name).unlink()
        print(f"removed  {name} (no source in {SOURCES_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
