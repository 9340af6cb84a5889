"""The container images, without a Docker engine: each Dockerfile is parsed and checked for what the images
promise (multi-stage, exact pins, non-root uid 1000, no compilers at run time, HEALTHCHECK, KServe-style
ENTRYPOINT), and each image's ENTRYPOINT + CMD + ENV is run in the matching local environment, under a
read-only root filesystem with a writable /tmp where this machine allows it (as `docker run --read-only
--tmpfs /tmp`), until it answers /v2/health/ready; then the HEALTHCHECK itself runs against it, and SIGTERM
must stop it."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from support.dockerfile import DOCKER, Stage, dockerfile, json_form
from support.servers import REPO, free_port, start_predictor


def healthcheck_command(stage: Stage) -> list[str] | None:
    value = stage.last("HEALTHCHECK")
    if value is None:
        return None
    words = value.split()
    while words and words[0].startswith("--"):
        words.pop(0)  # --interval=10s, --timeout=5s, ...
    assert words and words[0].upper() == "CMD", f"HEALTHCHECK without CMD: {value}"
    return json_form(" ".join(words[1:]))


def shell_commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN line (split on && || ; |), each tokenised."""
    commands = []
    for part in re.split(r"&&|\|\||;|\|", run):
        try:
            commands.append(shlex.split(part))
        except ValueError:  # a quote that spans a split point, as in "$(a | b)": words are enough here
            commands.append(part.split())
    return [words for words in commands if words]


def pip_installs(stage: Stage) -> list[list[str]]:
    """The arguments after ``pip install`` (or ``python -m pip install``) of every RUN in the stage."""
    found = []
    for run in stage.all("RUN"):
        for words in shell_commands(run):
            for i in range(len(words) - 1):
                if words[i].endswith("pip") and words[i + 1] == "install":
                    found.append(words[i + 2 :])
                    break
    return found


# --- The images ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    name: str
    venv: str  # the local environment that stands for the image's
    lock: str  # the requirements file the image installs
    entrypoint: list[str]


IMAGES = {
    image.name: image
    for image in [
        Image("predictor", ".venv", "requirements/predictor-runtime.lock", ["ferry-predictor"]),
        Image("predictor-onnx", ".venv", "requirements/predictor-onnx-runtime.lock", ["ferry-predictor"]),
        Image("predictor-gpu", ".venv", "requirements/predictor-gpu.txt", ["ferry-predictor"]),
        Image("transformer", ".venv", "requirements/transformer-runtime.lock", ["ferry-transformer"]),
        Image("mlserver", ".venv-mlserver", "requirements/mlserver-runtime.lock", ["ferry-mlserver"]),
        Image("explainer", ".venv-explainer", "requirements/explainer-runtime.lock", ["ferry-explainer"]),
    ]
}
# The test environment each runtime lock is resolved against (scripts/lock.sh): same version of every shared pin.
TEST_LOCKS = {
    "predictor": "requirements/predictor.lock",
    "predictor-onnx": "requirements/predictor.lock",
    "transformer": "requirements/predictor.lock",
    "mlserver": "requirements/mlserver.lock",
    "explainer": "requirements/explainer.lock",
}
# (mypy is not among them: Feast requires SQLAlchemy[mypy], so the transformer image carries it at run time.)
TEST_ONLY = {
    "pytest",
    "pytest-asyncio",
    "pytest-timeout",
    "hypothesis",
    "moto",
    "ruff",
    "kubernetes-validate",
}
SERVED = ["predictor", "predictor-onnx", "transformer", "mlserver", "explainer"]
COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|build-essential|make|cmake|gfortran|rustc|cargo)\b")


def lock_pins(path: Path) -> dict[str, str]:
    """``name -> version`` of a requirements file that must pin every line exactly."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[A-Za-z0-9_.+!\-]+", line), (
            f"{path.name}: not pinned: {line}"
        )
        name, version = line.split("==")
        pins[re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()] = version
    return pins


def require_lock(image: Image) -> Path:
    path = REPO / image.lock
    if not path.exists():
        pytest.skip(f"{image.lock} does not exist yet (the {image.name} environment's lock file)")
    return path


# --- Static checks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGES)
def test_multi_stage_and_final_stage_copies_the_venv(name):
    parsed = dockerfile(name)
    assert len(parsed.stages) >= 2, "multi-stage: a builder stage and a runtime stage"
    builders = {stage.name for stage in parsed.stages[:-1]}
    copies = [c for c in parsed.final.all("COPY") if c.startswith("--from=")]
    assert any("/opt/venv" in c for c in copies), "the final stage copies the venv built earlier"
    for copy in copies:
        source = copy.split()[0].removeprefix("--from=")
        assert source in builders, f"COPY --from={source}: not a stage of this Dockerfile"
    # The project is installed into the venv by the builder, not copied as source into the final stage.
    assert all(c.startswith("--from=") for c in parsed.final.all("COPY")), (
        "final stage copies only from stages"
    )


@pytest.mark.parametrize("name", IMAGES)
def test_final_stage_runs_as_uid_1000(name):
    user = dockerfile(name).final.last("USER")
    # Numeric: Kubernetes' runAsNonRoot can only verify a numeric user.
    assert user == "1000:1000", f"final USER is {user!r}"


@pytest.mark.parametrize("name", IMAGES)
def test_no_build_tools_or_installs_in_the_final_stage(name):
    parsed = dockerfile(name)
    for run in parsed.final.all("RUN"):
        assert not re.search(r"\b(apt-get|apt|apk|dnf|yum)\b.*\binstall\b", run), (
            f"installs at run time: {run}"
        )
        assert not COMPILERS.search(run), f"build tools in the final stage: {run}"
    assert not pip_installs(parsed.final), "pip belongs in the builder stage"
    # The builder is where compilers belong; make sure the rule above is not vacuous.
    assert any(COMPILERS.search(run) for stage in parsed.stages[:-1] for run in stage.all("RUN"))


@pytest.mark.parametrize("name", IMAGES)
def test_the_development_tools_stay_out(name):
    """tools/ (demo builder, ``ferry up``, the stack check) is never copied in, and the ``ferry`` script its
    package declares is removed where the project is installed."""
    parsed = dockerfile(name)
    copies = [c for stage in parsed.stages for c in stage.all("COPY")]
    assert not [c for c in copies if re.search(r"(^|\s)tools\b", c)], copies
    assert any('rm "$(command -v ferry)"' in run for stage in parsed.stages for run in stage.all("RUN"))


@pytest.mark.parametrize("name", IMAGES)
def test_every_pip_install_is_exactly_pinned(name):
    parsed = dockerfile(name)
    installs = [args for stage in parsed.stages for args in pip_installs(stage)]
    assert installs
    value_options = {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url"}
    locks = []
    for args in installs:
        words = iter(args)
        for word in words:
            if word in value_options:
                value = next(words)
                if word in ("-r", "--requirement", "-c", "--constraint"):
                    locks.append(Path(value).name)
            elif word.startswith("-"):
                continue
            elif word.startswith("/"):  # the project itself: its dependencies come from the lock only
                assert "--no-deps" in args, f"project installed without --no-deps: {args}"
            else:
                assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+", word), f"unpinned: {word}"
    assert locks == [Path(IMAGES[name].lock).name], f"installs from {locks}"
    # The requirements file must be the one COPYed in from requirements/.
    assert any(c.split()[0] == IMAGES[name].lock for s in parsed.stages for c in s.all("COPY"))


@pytest.mark.parametrize("name", IMAGES)
def test_lock_file_pins_every_line_and_agrees_on_torch(name):
    image = IMAGES[name]
    pins = lock_pins(require_lock(image))
    torch_installs = [
        w
        for s in dockerfile(name).stages
        for args in pip_installs(s)
        for w in args
        if w.startswith("torch==")
    ]
    if name == "predictor-gpu":
        assert "torch" not in pins, "the GPU requirements leave torch to the CUDA build installed first"
        assert torch_installs == [f"torch=={lock_pins(REPO / 'requirements/predictor.lock')['torch']}"]
    elif "torch" in pins:
        assert torch_installs == [f"torch=={pins['torch']}"], (
            "torch is installed first, at the lock's version"
        )
    else:
        assert not torch_installs, f"{image.lock} has no torch; the image must not install one"


@pytest.mark.parametrize("name", sorted(TEST_LOCKS))
def test_runtime_lock_is_runtime_only_and_agrees_with_the_test_environment(name):
    """An image installs only what runs (no test tools), at the versions its tests ran with."""
    runtime = lock_pins(REPO / IMAGES[name].lock)
    tested = lock_pins(REPO / TEST_LOCKS[name])
    assert not TEST_ONLY & set(runtime), TEST_ONLY & set(runtime)
    differing = {k: (v, tested[k]) for k, v in runtime.items() if k in tested and tested[k] != v}
    assert not differing, f"{IMAGES[name].lock} vs {TEST_LOCKS[name]}: {differing}"
    missing = set(runtime) - set(tested)
    assert not missing, f"pinned in the image but never installed where its tests run: {missing}"


def test_the_onnx_image_has_no_torch_or_mlflow():
    pins = lock_pins(REPO / IMAGES["predictor-onnx"].lock)
    assert not {"torch", "mlflow-skinny", "mlflow", "kserve", "kubernetes", "pandas"} & set(pins)
    assert {"onnxruntime", "kserve-storage", "httptools", "uvloop"} <= set(pins)


def test_gpu_requirements_are_the_predictor_lock_with_onnxruntime_gpu():
    cpu = lock_pins(REPO / "requirements/predictor.lock")
    gpu = lock_pins(REPO / "requirements/predictor-gpu.txt")
    expected = {k: v for k, v in cpu.items() if k not in ("torch", "onnxruntime")}
    expected["onnxruntime-gpu"] = "1.31.1"
    assert gpu == expected, "regenerate requirements/predictor-gpu.txt from predictor.lock (see its header)"


@pytest.mark.parametrize("name", IMAGES)
def test_healthcheck_probes_readiness_with_python(name):
    command = healthcheck_command(dockerfile(name).final)
    assert command is not None, "HEALTHCHECK in exec form"
    assert command[0] == "python", "slim images have no curl"
    assert "http://127.0.0.1:8080/v2/health/ready" in " ".join(command)


@pytest.mark.parametrize("name", IMAGES)
def test_entrypoint_and_cmd_are_exec_form_and_match_expose(name):
    parsed = dockerfile(name)
    entrypoint, cmd = json_form(parsed.final.last("ENTRYPOINT")), json_form(parsed.final.last("CMD"))
    assert entrypoint == IMAGES[name].entrypoint
    assert cmd is not None, "CMD in exec form, so KServe's args replace it cleanly"
    exposed = {int(p.split("/")[0]) for value in parsed.final.all("EXPOSE") for p in value.split()}
    ports = {int(m[1]) for arg in cmd for m in [re.fullmatch(r"--\w*port=(\d+)", arg)] if m and m[1] != "0"}
    ports |= {int(v) for k, v in parsed.final.env().items() if k.endswith("_PORT")}
    assert 8080 in exposed and ports <= exposed, f"listening on {ports}, EXPOSE {exposed}"
    if name != "mlserver":
        assert "--http_port=8080" in cmd


@pytest.mark.parametrize("name", IMAGES)
def test_writes_only_under_tmp(name):
    final = dockerfile(name).final
    env = final.env()
    assert env["HOME"] == "/tmp" and env["FERRY_CACHE_DIR"] == "/tmp/ferry-models"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "no __pycache__ writes into a read-only site-packages"
    assert final.last("WORKDIR") == "/tmp"
    for key, value in env.items():
        if re.search(r"(CACHE|CONFIG)_?(DIR|PATH)$", key):
            assert value.startswith("/tmp/"), f"{key}={value} is outside /tmp"


@pytest.mark.parametrize("name", IMAGES)
def test_oci_labels(name):
    labels = dockerfile(name).final.labels()
    for key in ("title", "description", "version", "revision", "licenses", "source"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"missing org.opencontainers.image.{key}"


def test_gpu_image_uses_cuda_and_onnxruntime_gpu():
    parsed = dockerfile("predictor-gpu")
    assert re.fullmatch(
        r"nvidia/cuda:1[23]\.[\d.]+-cudnn-runtime-ubuntu\d+\.\d+", parsed.expand(parsed.final.base)
    )
    torch_index = parsed.expand(
        " ".join(parsed.stages[1].all("RUN")) + " " + " ".join(parsed.stages[1].all("ARG"))
    )
    assert "download.pytorch.org/whl/cu1" in torch_index
    assert "--device=cuda" in json_form(parsed.final.last("CMD"))


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or one of its parent folders wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        variants = [pattern] + ([pattern[3:]] if pattern.startswith("**/") else [])
        if any(fnmatch.fnmatchcase(c, v) for c in candidates for v in variants):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_context_small_and_complete():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in [
        ".venv/bin/python",
        ".venv-mlserver/x",
        ".venv-explainer/x",
        ".ferry/demo/x",
        ".git/HEAD",
        ".pytest_cache/x",
        "runtimes/ferry/__pycache__/model.cpython-311.pyc",
        "tests/conftest.py",
    ]:
        assert dockerignore_excludes(path, patterns), f"{path} would be sent to the daemon"
    for name in IMAGES:
        for stage in dockerfile(name).stages:
            for copy in stage.all("COPY"):
                if copy.startswith("--from="):
                    continue
                for source in copy.split()[:-1]:
                    assert not dockerignore_excludes(source, patterns), f"{name}: COPY {source} is ignored"


# --- compose.yaml --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_runs_the_stack(compose):
    services = compose["services"]
    assert set(services) == {"predictor", "transformer", "explainer", "redis"}
    assert services["redis"]["image"] == "redis:7" and services["redis"]["healthcheck"]["test"]
    for name in ("predictor", "transformer", "explainer"):
        service = services[name]
        assert (REPO / service["build"]["dockerfile"]).exists() and service["build"]["context"] == ".."
        assert service["image"].startswith(f"ghcr.io/ferry-serving/{name}:"), "the image names k8s/ uses"
        assert any(v.endswith(":/mnt/models:ro") for v in service["volumes"]), "demo read-only at /mnt/models"
        assert service["healthcheck"]["test"][:2] == ["CMD", "python"]
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
    transformer = services["transformer"]["command"]
    for flag in (
        "--predictor_host=predictor:8080",
        "--predictor_protocol=v2",
        "--online_store=redis",
        "--redis_url=redis://redis:6379",
    ):
        assert flag in transformer
    assert "--predictor_host=predictor:8080" in services["explainer"]["command"]
    healthy = {"condition": "service_healthy"}
    assert services["transformer"]["depends_on"] == {"predictor": healthy, "redis": healthy}
    assert services["explainer"]["depends_on"] == {"predictor": healthy}


def compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_is_valid():
    cli = compose_cli()
    if cli is None:
        pytest.skip("neither the `docker compose` plugin nor `docker-compose` is installed")
    done = subprocess.run(
        [*cli, "-f", str(DOCKER / "compose.yaml"), "config", "--quiet"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", ["predictor", "transformer", "explainer"])
def test_compose_commands_are_accepted_by_the_entrypoints(name, compose):
    """Every flag compose passes is one the image's entrypoint accepts (its --dry_run validates them)."""
    image = IMAGES[name]
    program = entry_program(image)
    done = subprocess.run(
        [str(program), *compose["services"][name]["command"], "--dry_run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_gpu_image_flags_are_accepted():
    parsed = dockerfile("predictor-gpu")
    program = entry_program(IMAGES["predictor-gpu"])
    command = json_form(parsed.final.last("CMD"))
    done = subprocess.run(
        [str(program), *command, "--dry_run"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **image_env(parsed.final)},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["device"] == "cuda"


# --- Running each image's ENTRYPOINT + CMD -------------------------------------------------------------------


def entry_program(image: Image) -> Path:
    """The entrypoint's executable in the image's local environment, or a skip naming what is missing."""
    venv = REPO / image.venv
    if not (venv / "bin" / "python").exists():
        pytest.skip(
            f"{image.venv} is not built (scripts/envs.sh {image.venv.removeprefix('.venv-') or 'predictor'})"
        )
    program = venv / "bin" / image.entrypoint[0]
    if not program.exists():
        pytest.skip(f"{program.relative_to(REPO)} is not installed")
    module = {"ferry-transformer": "ferry_feast.__main__", "ferry-explainer": "ferry_explain.__main__"}
    if image.entrypoint[0] in module:
        probe = f"import importlib.util as u, sys; sys.exit(0 if u.find_spec({module[image.entrypoint[0]]!r}) else 1)"
        if subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd="/").returncode != 0:
            pytest.skip(f"{image.entrypoint[0]}'s module {module[image.entrypoint[0]]} does not exist yet")
    return program


def image_env(stage: Stage) -> dict[str, str]:
    """The image's ENV, less the venv's PATH (the local environment's bin/ is put first instead)."""
    return {k: v for k, v in stage.env().items() if k not in ("PATH", "VIRTUAL_ENV")}


def read_only_root_available() -> bool:
    """Whether this machine lets us emulate `--read-only --tmpfs /tmp` with a private mount namespace."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run([*READ_ONLY_ROOT, "true"], capture_output=True).returncode == 0


# A private mount namespace where / (and every path not under /tmp) is read-only, like the container's root
# filesystem; /tmp stays writable, as the tmpfs of `docker run --read-only --tmpfs /tmp`.
READ_ONLY_ROOT = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    "mount --rbind / / && mount -o remount,bind,ro / && mount --bind /tmp /tmp"
    ' && mount -o remount,bind,rw /tmp && exec "$@"',
    "sh",
]


@dataclass
class Running:
    process: subprocess.Popen
    port: int  # the HTTP port that stands for 8080
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@pytest.fixture(scope="module")
def predictor_for_clients(demo_dir, tmp_path_factory):
    """A predictor serving the demo churn model, for the transformer and explainer to call."""
    server = start_predictor(
        demo_dir / "churn" / "onnx",
        tmp_path_factory.mktemp("logs") / "p.log",
        "--model_name=churn",
        "--grpc_port=0",
    )
    yield server
    server.stop()


def deployment_args(name: str, demo_dir: Path, workdir: Path, predictor_host: str) -> list[str]:
    """What the deployment adds to CMD, as docker/compose.yaml and k8s/ do (later flags win)."""
    if name == "transformer":
        return [
            "--model_name=churn-transformer",
            f"--predictor_host={predictor_host}",
            "--predictor_model_name=churn",
            f"--feature_repo={workdir / 'feature_repo'}",
            f"--feature_data_dir={demo_dir / 'feast'}",
            "--online_store=sqlite",
            "--prepare",
        ]
    if name == "explainer":
        return [
            "--model_name=churn",
            f"--predictor_host={predictor_host}",
            "--explainer_type=AnchorTabular",
            f"--reference_uri={demo_dir / 'churn' / 'reference.csv'}",
        ]
    return []


def model_dir_for(name: str, demo_dir: Path) -> Path:
    # What KServe's storage-initializer would put at /mnt/models for this image.
    return demo_dir / "churn" if name == "explainer" else demo_dir / "churn" / "onnx"


@pytest.fixture
def running(request, demo_dir, tmp_path):
    """Start image ``request.param``'s ENTRYPOINT + CMD + ENV from its local environment on loopback."""
    name = request.param
    image, parsed = IMAGES[name], dockerfile(name)
    program = entry_program(image)
    final = parsed.final
    ports = {int(p.split("/")[0]): free_port() for value in final.all("EXPOSE") for p in value.split()}
    model_dir = str(model_dir_for(name, demo_dir))

    def localise(value: str) -> str:
        value = value.replace("/mnt/models", model_dir)
        match = re.fullmatch(r"(--\w*port=)(\d+)", value)
        return f"{match[1]}{ports.get(int(match[2]), match[2])}" if match else value

    env = {k: localise(v) for k, v in image_env(final).items()}
    for key, value in env.items():
        if key.endswith("_PORT") and value.isdigit():
            env[key] = str(ports.get(int(value), value))
    command = [str(program), *image.entrypoint[1:], *map(localise, json_form(final.last("CMD")))]
    if name == "mlserver":
        env["MLSERVER_HOST"] = "127.0.0.1"  # MLServer binds 0.0.0.0 unless told
    else:
        command.append("--host=127.0.0.1")
    if name in ("transformer", "explainer"):
        predictor = request.getfixturevalue("predictor_for_clients")
        command += deployment_args(name, demo_dir, tmp_path, f"127.0.0.1:{predictor.http_port}")
    if read_only_root_available():
        command = [*READ_ONLY_ROOT, *command]
    env = {**os.environ, **env, "PATH": f"{REPO / image.venv / 'bin'}:{os.environ['PATH']}"}
    log = tmp_path / f"{name}.log"
    workdir = tmp_path / "workdir"  # WORKDIR /tmp
    workdir.mkdir()
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    server = Running(process, ports[8080], log)
    try:
        wait_ready(server, timeout=240)
        yield server, env, final
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def wait_ready(server: Running, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"exited with {server.process.returncode} before ready:\n{server.text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{server.port}/v2/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"not ready within {timeout} s:\n{server.text()}")


def run_healthcheck(final: Stage, env: dict, port: int) -> subprocess.CompletedProcess:
    command = [part.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for part in healthcheck_command(final)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("running", SERVED, indirect=True)
def test_image_command_serves_and_stops_on_sigterm(running):
    server, env, final = running
    assert httpx.get(f"http://127.0.0.1:{server.port}/v2/health/ready").status_code == 200
    check = run_healthcheck(final, env, server.port)
    assert check.returncode == 0, check.stderr
    server.process.send_signal(signal.SIGTERM)
    try:
        code = server.process.wait(45)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 45 s after SIGTERM:\n{server.text()}")
    assert code in (0, -signal.SIGTERM), f"exit code {code} on SIGTERM:\n{server.text()}"


def test_healthcheck_fails_when_nothing_answers():
    final = dockerfile("predictor").final
    program = entry_program(IMAGES["predictor"])
    env = {**os.environ, "PATH": f"{program.parent}:{os.environ['PATH']}"}
    assert run_healthcheck(final, env, free_port()).returncode == 1
