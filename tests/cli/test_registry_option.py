"""One flag name: every verb that opens a registry takes ``--registry DIR``; ``--root`` is its hidden alias."""

from __future__ import annotations

import argparse
from typing import Iterator

import pytest

from adapterhub.cli import build_parser, main
from adapterhub.paths import REGISTRY_DEFAULT

REGISTRY_VERBS = ("list", "show", "import", "rm", "tag", "verify", "export", "gc", "rebuild-index", "set-contract", "history")
# every command that opens a registry (a verb added later that opens one belongs here too)
OPENS_A_REGISTRY = {"registry", *(f"registry {verb}" for verb in REGISTRY_VERBS), "pull", "push", "train",
                    "evaluate", "merge", "quickstart", "generate", "predict", "chat", "classify", "tag", "serve",
                    "promote", "rollback", "router build", "router evaluate", "router route"}


def _commands(parser: argparse.ArgumentParser,
              path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's parser, the top one left out, named by its words (``"registry list"``)."""
    if path:
        yield " ".join(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def _filler(parser: argparse.ArgumentParser) -> list[str]:
    """Values for the command's required arguments, so that it parses."""
    words: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or not (action.required or not action.option_strings):
            continue
        value = str(next(iter(action.choices))) if action.choices else "x"
        if action.nargs in ("?", "*"):
            continue
        words += [*action.option_strings[:1], value]
    return words


COMMANDS = dict(_commands(build_parser()))


def test_the_commands_that_open_a_registry_are_the_ones_with_the_flag():
    with_flag = {name for name, parser in COMMANDS.items() if "--registry" in _options(parser)}
    assert with_flag == OPENS_A_REGISTRY
    assert not {name for name, parser in COMMANDS.items() if "--root" in _options(parser)} - with_flag


@pytest.mark.parametrize("command", sorted(OPENS_A_REGISTRY))
@pytest.mark.parametrize("flag", ["--registry", "--root"])
def test_every_command_that_opens_a_registry_takes_the_flag(command, flag):
    words = command.split()
    argv = [*words, *_filler(COMMANDS[command]), flag, "/srv/adapters"]
    if command == "registry":  # the group takes it before its verb
        argv = ["registry", flag, "/srv/adapters", "list"]
    assert build_parser().parse_args(argv).registry == "/srv/adapters"


@pytest.mark.parametrize("command", sorted(OPENS_A_REGISTRY))
def test_help_shows_registry_with_the_one_default_rule_and_hides_root(command):
    help_text = COMMANDS[command].format_help()
    assert "--registry DIR" in help_text and "--root" not in help_text
    assert _options(COMMANDS[command])["--registry"].help.endswith(f"{REGISTRY_DEFAULT})")


def test_registry_given_before_the_verb_is_kept_after_it():
    parser = build_parser()
    assert parser.parse_args(["registry", "--registry", "/a", "list"]).registry == "/a"
    assert parser.parse_args(["registry", "--registry", "/a", "list", "--registry", "/b"]).registry == "/b"
    assert parser.parse_args(["registry", "list"]).registry is None


def test_registry_list_reads_the_registry_named_by_the_flag(tmp_path, capsys, lora_dir):
    root = tmp_path / "elsewhere"
    assert main(["registry", "import", str(lora_dir), "--name", "a", "--registry", str(root)]) == 0
    capsys.readouterr()
    assert main(["registry", "list", "--registry", str(root)]) == 0
    out = capsys.readouterr().out
    assert "a@1" in out and str(root) in out
    assert main(["registry", "--root", str(root), "list"]) == 0  # the old name still works
    assert "a@1" in capsys.readouterr().out
