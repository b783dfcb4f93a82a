"""First contact (#11): what a new user meets first: --help, input limits, data errors, TensorBoard,
resume messages, an 80-column terminal, --amp on a CPU, and checkpoints that cannot run code."""

from __future__ import annotations

import inspect
import re
import typing

import pytest
import typer.models

from conftest import run_cli
from noiseattack import cli, data as data_lib


def _option_helps(fn) -> dict[str, str]:
    """{parameter name: help text} of every typer Option/Argument declared on fn, read from its source
    annotations (not from the command typer builds)."""
    out = {}
    for name, hint in typing.get_type_hints(fn, include_extras=True).items():
        for extra in getattr(hint, "__metadata__", ()):
            if isinstance(extra, typer.models.ParameterInfo) and extra.help:
                out[name] = extra.help
    return out


def _commands() -> list[tuple[str, dict[str, str]]]:
    cmds = []
    for info in cli.app.registered_commands:
        fn = getattr(info.callback, "__wrapped__", info.callback)
        helps = _option_helps(fn)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()):
            helps.update(_option_helps(cli._shared_options))  # clean, constant, mix take the shared options
        cmds.append((info.name or fn.__name__.replace("_", "-"), helps))
    return cmds


def _squash(text: str) -> str:
    """Without whitespace: help is wrapped at spaces and after hyphens."""
    return "".join(text.split())


def test_every_command_help_shows_every_option_help(capsys):
    commands = _commands()
    assert {"clean", "constant", "mix", "report", "sweep"} <= {name for name, _ in commands}
    for name, helps in commands:
        code, out, err = run_cli(capsys, name, "--help")
        assert code == 0, err
        shown = _squash(out)
        missing = [p for p, h in helps.items() if _squash(h) not in shown]
        assert not missing, f"`noiseattack {name} --help` lacks the help of {missing}"
    assert len(dict(commands)["mix"]) >= 30  # the shared options were found


@pytest.mark.parametrize("command,option", [("clean", "--dataset"), ("mix", "--dataset"), ("mix", "--extra")])
def test_dataset_help_lists_the_datasets(capsys, command, option):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    text = _squash(out)
    start = text.index(option + "<str>")
    entry = text[start:start + 120]
    names = re.findall(r"[a-z0-9]+", entry.split(":", 1)[1])
    assert set(data_lib.DATASETS) <= set(names), entry
