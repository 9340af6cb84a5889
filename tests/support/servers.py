"""Real servers on loopback for black-box tests: start a process, wait until it is ready, stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    http_port: int
    grpc_port: int
    log_path: Path
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start(
    command: list[str],
    log_path: Path,
    *,
    http_port: int,
    grpc_port: int = 0,
    ready_path: str = "/v2/health/ready",
    timeout: float = 120,
    env: dict | None = None,
    host: str = "127.0.0.1",
) -> ServerProcess:
    """Start ``command`` and wait until ``ready_path`` answers 200 at ``host`` (fails with the server's log
    otherwise)."""
    log_file = open(log_path, "wb")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(
        command, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO
    )
    server = ServerProcess(process, http_port, grpc_port, log_path, host)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}{ready_path}", timeout=1).status_code == 200:
                return server
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server not ready within {timeout} s:\n{server.log()[-4000:]}")


def start_predictor(
    model_dir: Path,
    log_path: Path,
    *flags: str,
    timeout: float = 120,
    env=None,
    http_port: int | None = None,
    grpc_port: int | None = None,
    ready_path: str = "/v2/health/ready",
) -> ServerProcess:
    """``ferry-predictor`` on loopback (free ports unless given), serving ``model_dir``, once ``ready_path``
    answers 200."""
    http_port, grpc_port = http_port or free_port(), grpc_port or free_port()
    command = [
        sys.executable,
        "-m",
        "ferry",
        f"--model_dir={model_dir}",
        f"--http_port={http_port}",
        f"--grpc_port={grpc_port}",
        "--host=127.0.0.1",
        *flags,
    ]
    return start(
        command,
        log_path,
        http_port=http_port,
        grpc_port=grpc_port,
        timeout=timeout,
        env=env,
        ready_path=ready_path,
    )


def start_all(jobs: dict[str, tuple]) -> dict[str, ServerProcess]:
    """Start servers concurrently; if any fails, stop the others and fail with its log."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(fn, *args) for name, (fn, *args) in jobs.items()}
    servers, errors = {}, []
    for name, future in futures.items():
        try:
            servers[name] = future.result()
        except Exception as exc:
            errors.append(f"{name}: {exc}")
    if errors:
        for server in servers.values():
            server.stop()
        pytest.fail("\n\n".join(errors))
    return servers
