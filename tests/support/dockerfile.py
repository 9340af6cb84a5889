"""A small Dockerfile parser: stages, ENV, LABEL, and the exec forms of ENTRYPOINT / CMD. Enough for the tests to
read what an image runs from the Dockerfile itself, so no argv is copied into a test by hand."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from support.servers import REPO

DOCKER = REPO / "docker"


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # the rest of the instruction, continuation lines joined


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str | None:
        values = self.all(keyword)
        return values[-1] if values else None

    def env(self) -> dict[str, str]:
        """ENV in this stage, in order (``ENV A=1 B=2`` and the legacy ``ENV A 1``)."""
        values: dict[str, str] = {}
        for value in self.all("ENV"):
            tokens = shlex.split(value)
            if tokens and "=" not in tokens[0]:
                values[tokens[0]] = " ".join(tokens[1:])
                continue
            for token in tokens:
                name, _, setting = token.partition("=")
                values[name] = setting
        return values

    def labels(self) -> dict[str, str]:
        values = {}
        for value in self.all("LABEL"):
            for token in shlex.split(value):
                name, _, setting = token.partition("=")
                values[name] = setting
        return values


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]  # ARGs before the first FROM, with their defaults
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def expand(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.args.get(m[1] or m[2], m[0]), text)


def logical_lines(text: str) -> list[str]:
    """Instructions as single lines: comments and blank lines dropped, backslash continuations joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continuation, as Docker does
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current.strip())
    return lines


def parse(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            words = value.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert keyword == "ARG", f"{path.name}: only ARG may come before the first FROM, got {keyword}"
            name, _, default = value.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, value))
    return Dockerfile(path, args, stages)


def json_form(value: str | None) -> list[str] | None:
    """The exec (JSON array) form of ENTRYPOINT / CMD / HEALTHCHECK CMD, or None for the shell form."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed) else None


def dockerfile(name: str) -> Dockerfile:
    return parse(DOCKER / f"{name}.Dockerfile")
