"""Every Ferry entry point (predictor, transformer, explainer) has every server flag: their settings extend
``ferry.settings.ServerSettings``, and each command line lists its flags."""

from __future__ import annotations

import subprocess

import pytest
from ferry.settings import ServerSettings
from support.servers import REPO

COMMANDS = {
    "ferry-predictor": REPO / ".venv" / "bin" / "ferry-predictor",
    "ferry-transformer": REPO / ".venv" / "bin" / "ferry-transformer",
    "ferry-explainer": REPO / ".venv-explainer" / "bin" / "ferry-explainer",
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_server_flag_is_on_every_command_line(command):
    done = subprocess.run([str(COMMANDS[command]), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    missing = [name for name in ServerSettings.model_fields if f"--{name} " not in done.stdout]
    assert not missing, f"{command} lacks {missing}"
