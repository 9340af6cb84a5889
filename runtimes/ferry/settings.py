"""Typed settings, from command-line flags (KServe's names where KServe has one) and ``FERRY_*`` variables.

Every value is validated before a model loads; a bad one stops the process with exit code 2 and a message
that names the flag, what it expects and what it got."""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "FERRY_"


def container_memory_bytes() -> int:
    """The container's memory limit (cgroup v2, then v1), else the machine's memory."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 1 << 40


def memory_share(fraction: float, *, at_most: int | None = None, at_least: int = 0) -> int:
    """``fraction`` of the container's memory limit (else of the machine's memory), in bytes, no more than
    ``at_most`` and no less than ``at_least``."""
    share = int(container_memory_bytes() * fraction)
    if at_most is not None:
        share = min(share, at_most)
    return max(share, at_least)


class BatchingSettings(BaseModel):
    """What a model's dynamic batcher may do. Also accepted per model under ``batching`` in ``ferry.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batching: bool = Field(True, description="Batch concurrent requests (false: each request runs alone).")
    max_batch_size: int = Field(64, ge=1, le=65536, description="Most rows in one batch.")
    max_queue_delay_ms: float = Field(
        0.0, ge=0, le=10_000, description="Extra wait for a fuller batch once an instance is idle (0: none)."
    )
    max_queue_rows: int = Field(8192, ge=1, description="Rows that may wait; beyond: 503 Overloaded.")
    preferred_batch_sizes: tuple[int, ...] = Field(
        (), description="Buckets batches are padded up to (CUDA graphs, TensorRT profiles), e.g. 1,8,32,64."
    )
    instances: int = Field(1, ge=1, le=64, description="Model instances (threads, CUDA streams) per model.")
    adaptive_batch_size: bool = Field(
        True,
        description="On CPU, stop growing batches past the size measured to cost more CPU per row "
        "(a model whose batch outgrows the caches); never with preferred_batch_sizes.",
    )
    inline_compute_us: float = Field(
        100.0,
        ge=0,
        le=10_000,
        description="Batches measured faster than this run on the event loop: a thread hand-off costs more.",
    )

    @field_validator("preferred_batch_sizes", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(int(part) for part in value.split(",") if part.strip())
        return value


class ModelSettings(BatchingSettings):
    """How to load and run a model."""

    format: Literal["auto", "onnx", "torchscript", "torch_export", "mlflow"] = Field(
        "auto", description="Model format; auto detects it from the files."
    )
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu, cuda or cuda:N.")
    dtype: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="Compute precision (torch on CUDA).")
    cuda_graphs: bool = Field(False, description="Capture CUDA graphs per preferred batch size (torch).")
    tensorrt: bool = Field(False, description="Prefer onnxruntime's TensorRT provider when present.")
    intra_op_threads: int = Field(0, ge=0, le=256, description="Threads per model run; 0: the CPUs given.")
    allow_unpickle: bool = Field(
        False, description="Allow formats that unpickle Python objects (mlflow.pyfunc flavours)."
    )
    warmup: bool = Field(True, description="Run every batch bucket once before reporting ready.")
    request_timeout_s: float = Field(60.0, gt=0, le=3600, description="Deadline for a request in the queue.")
    max_request_rows: int = Field(65536, ge=1, description="Most rows one request may carry.")


class ServerSettings(BaseModel):
    """The server flags every Ferry entry point has (predictor, transformer, explainer): ports, limits, logging,
    tracing and shutdown. ``ferry.server.app.serve`` takes them whole."""

    http_port: int = Field(8080, ge=0, le=65535, description="HTTP port (V1, V2 REST, Seldon, metrics).")
    grpc_port: int = Field(8081, ge=0, le=65535, description="gRPC port (V2); 0 disables gRPC.")
    host: str = Field("0.0.0.0", description="Address to bind.")
    workers: int = Field(1, ge=1, le=1, description="Processes; Ferry uses one per pod (see README).")
    server: Literal["ferry", "kserve"] = Field(
        "ferry", description="ferry: the lean server; kserve: ModelServer."
    )
    max_body_bytes: int = Field(64 << 20, ge=1024, description="Largest HTTP request body (413 beyond).")
    max_grpc_message_bytes: int = Field(64 << 20, ge=1024, description="Largest gRPC message.")
    grpc_transport: Literal["ferry", "grpcio"] = Field(
        "ferry", description="ferry: Ferry's HTTP/2 transport (fast unary calls); grpcio: grpc.aio."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    otel_endpoint: str = Field("", description="OTLP/HTTP endpoint for traces (empty: tracing off).")
    drain_seconds: float = Field(
        5.0,
        ge=0,
        description="On SIGTERM, how long requests on open connections are still answered (each with "
        "Connection: close, or after GOAWAY) before idle connections close; ends early after "
        "--drain_quiet_seconds without any.",
    )
    drain_quiet_seconds: float = Field(
        0.5,
        ge=0,
        description="The drain window ends early once no connection has been open, opened or closed for this "
        "long (clients told to go have gone elsewhere). At or above --drain_seconds the window is always held in "
        "full: for callers whose requests are sparse, or slow to reconnect.",
    )
    drain_timeout_s: float = Field(
        30.0, ge=0, description="After the drain window, how long in-flight work may finish."
    )
    max_buffered_request_bytes: int = Field(
        0,
        ge=0,
        description="Request bytes all connections together may hold before they are handled (HTTP/2 flow "
        "control waits and HTTP/1.1 stops reading beyond it); 0: a quarter of the container's memory, at most "
        "1 GiB and at least twice the body limit.",
    )
    buffer_wait_s: float = Field(
        5.0,
        gt=0,
        description="How long an HTTP/1.1 body waits for that budget before a 503 with Retry-After.",
    )
    request_read_timeout_s: float = Field(
        60.0, gt=0, description="Deadline for a whole request, head and body, from its first byte (408)."
    )
    max_request_head_bytes: int = Field(
        64 << 10, ge=1024, description="Largest HTTP/1.1 request line and headers (431 beyond)."
    )
    max_request_headers: int = Field(100, ge=8, description="Most header lines in a request (431 beyond).")
    max_connections: int = Field(
        1024,
        ge=1,
        description="Open connections per port; one more is answered 503 (HTTP) or GOAWAY and closed.",
    )
    idle_timeout_s: float = Field(
        75.0,
        ge=0,
        description="Close an HTTP keep-alive connection (GOAWAY on gRPC) idle this long (0: never).",
    )

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class PredictorSettings(ServerSettings, ModelSettings):
    """``ferry-predictor``: where the model is and how to serve it."""

    model_name: str = Field(
        "model", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$", description="Model name."
    )
    model_dir: str = Field(
        "/mnt/models",
        description="Local model directory or storage URI (s3://, gs://, https://, pvc://, models:/, runs:/). "
        "A directory of model directories serves each as its own model.",
    )
    cache_dir: str = Field("/tmp/ferry-models", description="Where remote models are downloaded.")
    model_repository: str = Field(
        "",
        description="Serve a model repository (Triton's layout: a folder per model, numbered version folders) "
        "with live load, reload and unload, instead of --model_dir.",
    )
    model_control_mode: Literal["none", "explicit", "poll"] = Field(
        "none",
        description="With --model_repository: none (all loaded at start), explicit (load/unload on request), "
        "poll (the folder read again every --repository_poll_s).",
    )
    load_model: str = Field(
        "", description="explicit mode: models to load at start, comma-separated ('*': all of them)."
    )
    repository_poll_s: float = Field(
        15.0, gt=0, description="poll mode: seconds between reads of the folder."
    )
    max_model_memory_bytes: int = Field(
        0,
        ge=0,
        description="Memory the models may take; a load beyond it is refused (0: nine tenths of the container's memory limit).",
    )
    explainer_url: str = Field(
        "",
        pattern=r"^(https?://\S+)?$",
        description="Forward explain calls made to this predictor (Seldon's /api/v1.0/explain, KServe's :explain) "
        "to Ferry's explainer at this URL, e.g. http://churn-explainer:9000 (empty: explain is 404 here).",
    )
    explainer_model_name: str = Field(
        "", description="The model name the explainer serves (default: --model_name), for :explain."
    )
    explainer_timeout_s: float = Field(120.0, gt=0, description="Deadline of a forwarded explanation.")

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


def parse_settings(cls: type[BaseModel], argv: list[str] | None = None, *, prog: str | None = None) -> Any:
    """Settings from flags (``--name=value`` or ``--name value``; dashes or underscores), then ``FERRY_NAME``
    variables, then defaults. ``--dry_run`` prints the resolved settings and exits 0."""
    parser = argparse.ArgumentParser(prog=prog, description=cls.__doc__, allow_abbrev=False)
    for name, info in cls.model_fields.items():
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        parser.add_argument(
            *flags, dest=name, default=None, metavar=_metavar(info.annotation), help=info.description
        )
    parser.add_argument(
        "--dry_run", "--dry-run", action="store_true", help="Validate settings, print them, exit."
    )
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for name in cls.model_fields:
        raw = getattr(args, name)
        if raw is None:
            raw = os.environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = raw
    try:
        settings = cls.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        )
        parser.exit(2, f"{parser.prog}: invalid settings: {problems}\n")
    if args.dry_run:
        sys.stdout.write(settings.model_dump_json(indent=2) + "\n")
        parser.exit(0)
    return settings


def _metavar(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(annotation)) + "}"
    if isinstance(annotation, types.UnionType):
        return "VALUE"
    return getattr(annotation, "__name__", "VALUE").upper()


def available_cpus() -> int:
    """CPUs this container may use: the cgroup quota when set, else the affinity mask."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return max(1, int(-(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return len(os.sched_getaffinity(0))
