"""``ferry-mlserver [FOLDER]``: the MLServer image's entrypoint, ``mlserver start`` on FOLDER or, without one, on
``$MLSERVER_MODELS_DIR`` (as MLServer's own image does; Seldon Core 2 sets it to the folder its agent fills).

One case needs a default: a folder with no ``model-settings.json`` served at start-up (``docker run`` with a model
mounted at /mnt/models). MLServer then builds the one model from the ``MLSERVER_MODEL_*`` variables, and its
files are that folder, so ``MLSERVER_MODEL_URI`` defaults to it. The default is never set where models arrive
later through the repository API (``MLSERVER_LOAD_MODELS_AT_STARTUP=false``): MLServer would apply it to every
model as its ``parameters.uri`` and each would load the folder of all models instead of its own.

Kept free of heavy imports: it only decides the arguments and replaces itself with ``mlserver``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_MODELS_DIR = "/mnt/models"


def command(argv: list[str], environ: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(the ``mlserver`` argv, the environment to run it with)."""
    folder = argv[0] if argv else environ.get("MLSERVER_MODELS_DIR") or DEFAULT_MODELS_DIR
    env = dict(environ)
    loads_at_start = env.get("MLSERVER_LOAD_MODELS_AT_STARTUP", "true").strip().lower() not in ("false", "0")
    if (
        loads_at_start
        and "MLSERVER_MODEL_URI" not in env
        and not any(Path(folder).rglob("model-settings.json"))
    ):
        env["MLSERVER_MODEL_URI"] = folder
    return ["mlserver", "start", folder, *argv[1:]], env


def main() -> None:
    args, env = command(sys.argv[1:], dict(os.environ))
    os.execvpe(args[0], args, env)


if __name__ == "__main__":
    main()
