"""Dockerfiles as data: the instructions a build runs, parsed and checked, with no engine.

    parse_dockerfile(Path("environment/Dockerfile"))  -> [Instruction(line=1, op="FROM", ...), ...]

What is understood: line continuations (`\\`), comments, parser directives (ignored), JSON
("exec") and shell forms, `RUN <<EOF` here-documents, `$VAR`/`${VAR}`/`${VAR:-x}`/`${VAR:+x}`
substitution (done by the builder, which knows the values). Stages: each FROM starts one
(`FROM ref [AS name]`, names unique); `--from` is COPY's only.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tumbler.errors import InvalidRequest

LAYER_OPS = {"RUN", "COPY", "ADD"}
CONFIG_OPS = {"FROM", "ENV", "WORKDIR", "USER", "ARG"}
# Recorded or ignored: they change how a container starts, not the image's files.
IGNORED_OPS = {"LABEL", "EXPOSE", "CMD", "ENTRYPOINT", "VOLUME", "HEALTHCHECK", "STOPSIGNAL",
               "SHELL", "MAINTAINER", "ONBUILD"}
HEREDOC = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Instruction:
    """One instruction: its line number, upper-cased op, flags (`--chown=x`) and arguments."""

    line: int
    op: str
    args: str
    """The text after the op and its flags, continuations joined."""
    flags: dict[str, str] = field(default_factory=dict)
    exec_form: list[str] | None = None
    """The JSON-array form's items (`RUN ["a", "b"]`), else None."""
    heredoc: str | None = None
    """The body of a `RUN <<EOF` here-document."""

    @property
    def text(self) -> str:
        flags = " ".join(f"--{k}={v}" for k, v in sorted(self.flags.items()))
        return " ".join(p for p in (self.op, flags, self.args) if p) + (
            "\n" + self.heredoc if self.heredoc is not None else "")


def parse_dockerfile(path: Path) -> list[Instruction]:
    """The instructions of Dockerfile `path`; InvalidRequest names the line at fault."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read {path}: {exc}") from None
    return parse_text(text, str(path))


def parse_text(text: str, where: str = "Dockerfile") -> list[Instruction]:
    lines = text.splitlines()
    out: list[Instruction] = []
    i = 0
    while i < len(lines):
        start = i + 1
        logical, i = _logical_line(lines, i)
        if not logical.strip():
            continue
        instr, i = _instruction(logical, start, lines, i, where)
        out.append(instr)
    _check_stages(out, where)
    return out


def _logical_line(lines: list[str], i: int) -> tuple[str, int]:
    """One instruction's text with continuations joined; comment lines skipped."""
    parts: list[str] = []
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.lstrip().startswith("#"):
            if parts:
                continue        # a comment inside a continued instruction is dropped
            return "", i
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        break
    return " ".join(p.strip() for p in parts), i


def _instruction(logical: str, line: int, lines: list[str], i: int, where: str
                 ) -> tuple[Instruction, int]:
    op, _, rest = logical.strip().partition(" ")
    op = op.upper()
    if op not in LAYER_OPS | CONFIG_OPS | IGNORED_OPS:
        raise InvalidRequest(f"{where}:{line}: unknown instruction {op!r}")
    flags, rest = _flags(rest.strip())
    heredoc = None
    match = HEREDOC.search(rest) if op == "RUN" else None
    if match:
        body, i = _heredoc_body(lines, i, match.group(3), strip_tabs=bool(match.group(1)),
                                line=line, where=where)
        prefix = rest[:match.start()].strip()
        heredoc = body if not prefix else None
        if prefix:   # `RUN python3 <<EOF`: the command reads the body on its stdin
            rest = f"{prefix} <<'{match.group(3)}'\n{body}{match.group(3)}"
        else:
            rest = ""
    exec_form = None
    if rest.startswith("[") and op in ("RUN", "CMD", "ENTRYPOINT", "COPY", "ADD"):
        try:
            exec_form = json.loads(rest)
        except json.JSONDecodeError:
            exec_form = None       # Docker also falls back to the shell form
        if exec_form is not None and not (isinstance(exec_form, list)
                                          and all(isinstance(a, str) for a in exec_form)):
            raise InvalidRequest(f"{where}:{line}: {op}'s JSON form must be a list of strings")
    if op in LAYER_OPS | {"FROM", "WORKDIR", "USER", "ARG", "ENV"} and not rest and heredoc is None:
        raise InvalidRequest(f"{where}:{line}: {op} needs an argument")
    return Instruction(line=line, op=op, args=rest, flags=flags, exec_form=exec_form,
                       heredoc=heredoc), i


def _flags(rest: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        key, _, value = word[2:].partition("=")
        flags[key] = value
        rest = rest.strip()
    return flags, rest


def _heredoc_body(lines: list[str], i: int, marker: str, *, strip_tabs: bool, line: int,
                  where: str) -> tuple[str, int]:
    body: list[str] = []
    while i < len(lines):
        text = lines[i].lstrip("\t") if strip_tabs else lines[i]
        i += 1
        if text == marker:
            return "".join(b + "\n" for b in body), i
        body.append(text)
    raise InvalidRequest(f"{where}:{line}: here-document {marker} is never closed")


def _check_stages(instructions: list[Instruction], where: str) -> None:
    if not instructions or not any(x.op == "FROM" for x in instructions):
        raise InvalidRequest(f"{where}: no FROM instruction")
    first = next(n for n, x in enumerate(instructions) if x.op == "FROM")
    for x in instructions[:first]:
        if x.op != "ARG":
            raise InvalidRequest(f"{where}:{x.line}: only ARG may come before FROM, not {x.op}")
    names: set[str] = set()
    for x in instructions[first:]:
        if x.op == "FROM":
            words = split_words(x.args)
            if len(words) == 3 and words[1].upper() == "AS":
                if words[2].lower() in names:
                    raise InvalidRequest(f"{where}:{x.line}: a second stage named {words[2]!r}")
                names.add(words[2].lower())
            elif len(words) != 1:
                raise InvalidRequest(f"{where}:{x.line}: FROM takes an image and optionally "
                                     f"`AS name`, not {x.args!r}")
        if "from" in x.flags and x.op != "COPY":
            raise InvalidRequest(f"{where}:{x.line}: --from is COPY's, not {x.op}'s")
        if "from" in x.flags and not x.flags["from"]:
            raise InvalidRequest(f"{where}:{x.line}: COPY --from needs a stage or image")


def substitute(text: str, values: dict[str, str]) -> str:
    """Docker's variable expansion: $X, ${X}, ${X:-default}, ${X:+alternative}; `\\$` is a $."""
    def expand(m: re.Match) -> str:
        name = m.group(1) or m.group(4)
        value = values.get(name, "")
        if m.group(2) == "-":
            return value or m.group(3)
        if m.group(2) == "+":
            return m.group(3) if value else ""
        return value
    parts = text.split("\\$")
    return "$".join(VAR.sub(expand, p) for p in parts)


def split_words(text: str) -> list[str]:
    """ENV/ARG/COPY arguments: words split on blanks, quotes removed (Docker's own rules)."""
    import shlex
    try:
        return shlex.split(text, posix=True)
    except ValueError as exc:
        raise InvalidRequest(f"cannot split {text!r}: {exc}") from None
