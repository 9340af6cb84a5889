"""scripts/k8s_schemas.py: the CRD -> strict JSON Schema conversion, on small CRDs written here (no network),
and the committed k8s/schemas/ against its SOURCES.json."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "k8s" / "schemas"
SOURCE_KEYS = {"repo", "tag", "commit", "path", "sha256", "bytes", "license", "kind", "schemas"}

_spec = importlib.util.spec_from_file_location("k8s_schemas", REPO / "scripts" / "k8s_schemas.py")
k8s_schemas = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(k8s_schemas)

WIDGET_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        description: A widget.
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            description: What the widget should be.
            type: object
            required: [size]
            properties:
              size:
                anyOf: [{type: integer}, {type: string}]
                x-kubernetes-int-or-string: true
              port:
                x-kubernetes-int-or-string: true
              note: {type: string, nullable: true}
              title: {type: string}
              tags: {type: array, items: {type: string}, x-kubernetes-list-type: set}
              extra: {type: object, x-kubernetes-preserve-unknown-fields: true}
              nested:
                type: object
                properties:
                  depth: {type: integer, description: How deep.}
  - name: v0
    served: false
    storage: false
    schema:
      openAPIV3Schema: {type: object}
"""

# The same CRD as a Helm chart ships it: wrapped in conditions, with actions in its own labels and annotations.
WIDGET_HELM_TEMPLATE = (
    "{{- if .Values.crd.create }}\n"
    + WIDGET_CRD.replace(
        "  name: widgets.example.com\n",
        "  name: widgets.example.com\n"
        "  annotations:\n"
        "    cert-manager.io/inject-ca-from: '{{ include \"widget.namespace\" . }}/serving-cert'\n"
        "{{- with .Values.crd.annotations }}\n"
        "{{- toYaml . | nindent 4}}\n"
        "{{- end }}\n"
        "  labels:\n"
        "    app.kubernetes.io/instance: '{{ .Release.Name }}'\n",
    )
    + "{{- end }}\n"
)


@pytest.fixture(scope="module")
def widget_schema() -> dict:
    schemas = k8s_schemas.crd_schemas(yaml.safe_load(WIDGET_CRD))
    assert list(schemas) == ["widget_v1.json"]  # v0 is not served
    return schemas["widget_v1.json"]


def widget(**spec) -> dict:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "team-a", "labels": {"app": "w"}},
        "spec": {"size": 1, **spec},
    }


def errors(schema: dict, document: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_valid_widget_passes(widget_schema):
    jsonschema.Draft7Validator.check_schema(widget_schema)
    assert errors(widget_schema, widget(nested={"depth": 2}, tags=["a", "b"], title="t")) == []


@pytest.mark.parametrize(
    "document",
    [
        {**widget(), "extraTopLevel": 1},
        widget(colour="red"),
        widget(nested={"depth": 2, "dpeth": 3}),
        {**widget(), "metadata": {"name": "w", "nmespace": "x"}},
    ],
    ids=["top level", "spec", "nested", "metadata"],
)
def test_unknown_field_is_rejected(widget_schema, document):
    assert any("Additional properties are not allowed" in error for error in errors(widget_schema, document))


def test_preserve_unknown_fields_allows_anything(widget_schema):
    assert errors(widget_schema, widget(extra={"anything": {"goes": [1, "two"]}})) == []


@pytest.mark.parametrize("field", ["size", "port"])  # controller-gen's anyOf form, and the bare extension
def test_int_or_string_accepts_both_and_rejects_a_bool(widget_schema, field):
    assert errors(widget_schema, widget(**{field: 3})) == []
    assert errors(widget_schema, widget(**{field: "50%"})) == []
    assert errors(widget_schema, widget(**{field: True})) != []
    assert errors(widget_schema, widget(**{field: 1.5})) != []


def test_nullable_accepts_null_and_only_there(widget_schema):
    assert errors(widget_schema, widget(note=None)) == []
    assert errors(widget_schema, widget(title=None)) != []


def test_set_rejects_duplicates(widget_schema):
    assert errors(widget_schema, widget(tags=["a", "a"])) != []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("apiVersion",), "example.com/v2"),
        (("kind",), "Gadget"),
        (("metadata", "name"), "Not_A_DNS_Name"),
        (("metadata", "namespace"), "a.b"),
        (("metadata", "labels"), {"app": 1}),
        (("metadata", "labels"), {"app": "x" * 64}),
        (("metadata", "annotations"), {"bad key!": "v"}),
    ],
)
def test_identity_and_metadata_are_strict(widget_schema, path, value):
    document = widget()
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert errors(widget_schema, document) != []


def test_required_fields(widget_schema):
    no_metadata = {"apiVersion": "example.com/v1", "kind": "Widget"}
    assert ": 'metadata' is a required property" in errors(widget_schema, no_metadata)
    assert "spec: 'size' is a required property" in errors(widget_schema, {**widget(), "spec": {}})


def test_descriptions_are_stripped_and_identity_added(widget_schema):
    text = json.dumps(widget_schema)
    assert "description" not in text
    assert widget_schema["$id"] == "https://schemas.local/example.com/widget_v1.json"
    assert widget_schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert widget_schema["x-kubernetes-group-version-kind"] == [
        {"group": "example.com", "kind": "Widget", "version": "v1"}
    ]
    assert widget_schema["x-kubernetes-scope"] == "Namespaced"


def test_helm_template_converts_after_stripping(widget_schema):
    with pytest.raises(yaml.YAMLError):  # the reason stripping exists
        yaml.safe_load(WIDGET_HELM_TEMPLATE)
    crd = k8s_schemas.parse_crd(WIDGET_HELM_TEMPLATE.encode(), helm=True)
    assert crd["metadata"]["labels"] == {"app.kubernetes.io/instance": ""}
    assert k8s_schemas.crd_schemas(crd) == {"widget_v1.json": widget_schema}


def source_for(data: bytes, path: str = "config/crd/example.com_widgets.yaml", **extra) -> dict:
    return {
        "repo": "example/widgets",
        "tag": "v1.0.0",
        "commit": "0" * 40,
        "path": path,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "license": "Apache-2.0",
        "kind": "Widget",
        "schemas": ["widget_v1.json"],
        **extra,
    }


def test_sha256_mismatch_is_refused_naming_the_file(tmp_path):
    data = WIDGET_CRD.encode()
    (tmp_path / "example.com_widgets.yaml").write_bytes(data + b"\n# edited\n")
    with pytest.raises(k8s_schemas.SourceError, match=r"example\.com_widgets\.yaml: sha256 [0-9a-f]{64}"):
        k8s_schemas.read_crd(source_for(data), tmp_path)
    (tmp_path / "example.com_widgets.yaml").write_bytes(data)
    assert k8s_schemas.read_crd(source_for(data), tmp_path) == data


def test_a_source_yielding_other_schemas_than_listed_is_refused(tmp_path):
    data = WIDGET_CRD.encode()
    (tmp_path / "example.com_widgets.yaml").write_bytes(data)
    with pytest.raises(k8s_schemas.SourceError, match="yields Widget"):
        k8s_schemas.generate([source_for(data, schemas=["widget_v2.json"])], tmp_path)


def test_write_then_check(tmp_path, capsys):
    """End to end through main(): a written folder checks clean; an edited or a stray file fails the check."""
    crds, schemas = tmp_path / "crds", tmp_path / "schemas"
    (crds / "helm").mkdir(parents=True)
    schemas.mkdir()
    plain, helm = WIDGET_CRD.encode(), WIDGET_HELM_TEMPLATE.replace("Widget", "Gizmo").encode()
    (crds / "example.com_widgets.yaml").write_bytes(plain)
    (crds / "helm" / "gizmos.yaml").write_bytes(helm)
    sources = [
        source_for(plain),
        source_for(
            helm, path="chart/templates/gizmos.yaml", kind="Gizmo", schemas=["gizmo_v1.json"], helm=True
        ),
    ]
    (schemas / "SOURCES.json").write_text(json.dumps(sources))
    argv = ["--crd-dir", str(crds), "--schemas", str(schemas)]

    assert k8s_schemas.main(argv) == 0
    assert sorted(p.name for p in schemas.iterdir()) == ["SOURCES.json", "gizmo_v1.json", "widget_v1.json"]
    assert k8s_schemas.main([*argv, "--check"]) == 0

    capsys.readouterr()
    reformatted = json.dumps(json.loads((schemas / "widget_v1.json").read_text()), indent=1)
    (schemas / "widget_v1.json").write_text(reformatted)
    (schemas / "old_v1.json").write_text("{}")
    assert k8s_schemas.main([*argv, "--check"]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS    widget_v1.json" in out
    assert "identical  gizmo_v1.json" in out
    assert "STALE      old_v1.json" in out


def test_every_schema_file_is_in_sources_and_vice_versa():
    sources = k8s_schemas.load_sources(SCHEMAS)
    listed = [name for source in sources for name in source["schemas"]]
    assert len(listed) == len(set(listed)), "a schema listed twice in SOURCES.json"
    assert set(listed) == k8s_schemas.committed(SCHEMAS)
    for source in sources:
        assert set(source) >= SOURCE_KEYS, source["path"]
        for name in source["schemas"]:
            schema = json.loads((SCHEMAS / name).read_bytes())
            assert schema["x-kubernetes-group-version-kind"][0]["kind"] == source["kind"], name


@pytest.mark.parametrize("name", sorted(k8s_schemas.committed(SCHEMAS)))
def test_committed_schema_is_as_the_script_writes_it(name):
    """A hand edit (reformatting included) shows here; regenerating from upstream is scripts/k8s_schemas.py --check."""
    content = (SCHEMAS / name).read_bytes()
    schema = json.loads(content)
    jsonschema.Draft7Validator.check_schema(schema)
    assert k8s_schemas.render(schema) == content
    assert schema["properties"]["metadata"] == k8s_schemas.METADATA
    gvk = schema["x-kubernetes-group-version-kind"][0]
    group, kind, version = gvk["group"], gvk["kind"], gvk["version"]
    assert name == f"{kind.lower()}_{version}.json"
    assert schema["$id"] == f"https://schemas.local/{group}/{name}"


def test_go_inline_flags_move_to_the_start():
    """The PrometheusRule CRD's Go pattern ``^(?i)(abort|warn)?$``: Python's re refuses flags after ``^``."""
    pattern = k8s_schemas.python_pattern("^(?i)(abort|warn)?$")
    assert pattern == "(?i)^(abort|warn)?$"
    schema = {"type": "string", "pattern": pattern}
    jsonschema.Draft7Validator.check_schema(schema)
    assert errors(schema, "WARN") == [] and errors(schema, "abort") == [] and errors(schema, "stop") != []
    assert k8s_schemas.python_pattern("^[a-z]+$") == "^[a-z]+$"
