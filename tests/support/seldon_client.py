"""The user's Seldon client (examples/seldon/seldon_client.py), run verbatim but for its URL."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from support.servers import REPO

CLIENT = REPO / "examples" / "seldon" / "seldon_client.py"


def run_seldon_client(predictions_url: str, workdir: Path, python: Path) -> tuple[dict, dict]:
    """(the prediction, the explanation) the client prints, its SELDON_URL replaced by ``predictions_url``."""
    source = CLIENT.read_text()
    script = re.sub(
        r'^SELDON_URL = ".*"$', f"SELDON_URL = {predictions_url!r}", source, count=1, flags=re.MULTILINE
    )
    assert script != source, "the client no longer sets SELDON_URL on one line"
    (workdir / "seldon_client.py").write_text(script)
    done = subprocess.run(
        [str(python), "seldon_client.py"], cwd=workdir, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    prediction, explanation = (
        ast.literal_eval(line.split(": ", 1)[1]) for line in done.stdout.splitlines()[-2:]
    )
    return prediction, explanation
