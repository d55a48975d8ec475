"""Every option of every `tumbler` command says what it does in --help (issue 22: stop, ls
--state/--label and --force had none, serve showed no defaults, plain flags looked as if they
took a value)."""
from __future__ import annotations

import os
import subprocess
import sys

import typer

from tumbler.cli import app


def is_group(cmd) -> bool:
    return hasattr(cmd, "list_commands")   # typer ships its own click: no isinstance


def options(cmd) -> list:
    return [p for p in cmd.params if p.param_type_name == "option"]


def commands(group, path: tuple[str, ...] = ()):
    """(path, command) for every command under `group`, groups included."""
    ctx = typer.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield path + (name,), cmd
        if is_group(cmd):
            yield from commands(cmd, path + (name,))


def test_the_walk_finds_every_command():
    found = {" ".join(path) for path, _ in commands(typer.main.get_command(app))}
    assert {"serve", "image import", "local stop", "sandbox ls", "pool resize"} <= found, found


def test_every_option_and_command_has_help():
    missing = []
    for path, cmd in commands(typer.main.get_command(app)):
        if not (cmd.help or cmd.short_help):
            missing.append(f"tumbler {' '.join(path)}: no description")
        for param in options(cmd):
            if not (param.help or "").strip():
                missing.append(f"tumbler {' '.join(path)} {param.opts[0]}: no help")
    assert not missing, "\n".join(missing)


def _help(*path: str) -> str:
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    out = subprocess.run([sys.executable, "-m", "tumbler.cli", *path, "--help"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_help_draws_every_option_with_its_text_and_flags_as_flags():
    for path, cmd in commands(typer.main.get_command(app)):
        if is_group(cmd):
            continue
        text = _help(*path)
        for param in options(cmd):
            # The option's own row (it starts with an option name), not a description naming it.
            line = next((ln for ln in text.splitlines() if f"{param.opts[0]} " in ln
                         and ln.lstrip(" │|*").startswith("-")), None)
            assert line is not None, f"tumbler {' '.join(path)} --help has no line for {param.opts[0]}"
            if param.is_flag:
                assert "<bool>" not in line, f"flag drawn as taking a value: {line.strip()}"
            first_words = " ".join(param.help.split()[:2])
            assert first_words in " ".join(line.split()), (param.opts[0], line)


def test_serve_help_shows_its_defaults():
    text = " ".join(_help("serve").split())
    for expected in ("(default 16g)", "(default 1048576)", "(default 1024)", "(default 5)",
                     "(default 1048576, 1m)", "(default 1073741824, 1g)"):
        assert expected in text, expected
