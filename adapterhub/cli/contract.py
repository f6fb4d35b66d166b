"""``adapterhub registry set-contract REF ...`` options and how ``registry show`` prints a contract.

>>> # adapterhub registry set-contract legal@1 --temperature 0 --stop "###" --schema schema.json  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping

from ..errors import ContractError
from ._output import print_fields

FIELDS = ("temperature", "top_p", "max_tokens", "stop", "schema", "evaluated_on")


def add_contract_options(parser: argparse.ArgumentParser) -> None:
    """The contract fields as flags (each one given replaces that field; --clear removes one)."""
    parser.add_argument("--temperature", type=float, default=None, help="default temperature (0 = greedy)")
    parser.add_argument("--top-p", type=float, default=None, help="default nucleus sampling mass")
    parser.add_argument("--max-tokens", type=int, default=None, help="default new tokens per answer")
    parser.add_argument("--stop", action="append", default=None, help="a stop string (repeatable, at most 4)")
    parser.add_argument("--schema", default=None, metavar="FILE|JSON", help="default response JSON schema")
    parser.add_argument("--prompt-template", default=None, help="the user message template (with {text})")
    parser.add_argument("--system-prompt", default=None, help="the system message")
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                        help="wrap prompts in the base's chat template")
    parser.add_argument("--evaluated", action="append", default=[], metavar="QUANT:METRIC=VALUE[,METRIC=VALUE]",
                        help="scores on a base quantisation (none, nf4, fp4, int8), e.g. nf4:accuracy=0.91")
    parser.add_argument("--clear", action="append", default=[], choices=FIELDS, help="remove a field (repeatable)")
    parser.add_argument("--replace", action="store_true", help="start from an empty contract")


def set_contract_from_args(registry: Any, args: argparse.Namespace) -> Any:
    """Call :func:`~adapterhub.registry.contract.set_contract` with the parsed flags."""
    from ..registry.contract import set_contract

    changes: dict[str, Any] = {key: getattr(args, key) for key in ("temperature", "top_p", "max_tokens", "stop")
                               if getattr(args, key) is not None}
    if args.schema is not None:
        changes["schema"] = _schema(args.schema)
    if args.evaluated:
        changes["evaluated_on"] = dict(_scores(item) for item in args.evaluated)
    changes.update({field: None for field in args.clear})
    template = {"prompt_template": args.prompt_template, "system_prompt": args.system_prompt, "chat": args.chat}
    if not changes and not any(value is not None for value in template.values()) and not args.replace:
        raise ContractError("set-contract needs at least one field to set (e.g. --temperature 0, --schema FILE)")
    return set_contract(registry, args.ref, changes, template=template, replace=args.replace)


def print_contract(manifest: Mapping[str, Any]) -> None:
    """The contract section of ``registry show`` (nothing when the entry has none)."""
    from ..registry.contract import contract_view

    view = contract_view(manifest)
    if view is None:
        return
    fields = {f"contract {key}": value for key, value in view.get("template", {}).items()}
    for key, value in view.items():
        if key == "template":
            continue
        if key == "evaluated_on":
            for quant, scores in value.items():
                fields[f"contract evaluated on {quant}"] = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else
                                                                   f"{k}={v}" for k, v in scores.items())
        else:
            fields[f"contract {key}"] = json.dumps(value) if isinstance(value, (dict, list)) else value
    print_fields(fields)


def _schema(value: str) -> Any:
    path = Path(value).expanduser()
    text = path.read_text(encoding="utf-8") if not value.lstrip().startswith("{") and path.is_file() else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ContractError(f"--schema {value!r} is neither a JSON schema file nor JSON ({error})") from None


def _scores(item: str) -> tuple[str, dict[str, Any]]:
    quant, _, rest = item.partition(":")
    scores: dict[str, Any] = {}
    for pair in filter(None, rest.split(",")):
        metric, sep, number = pair.partition("=")
        try:
            scores[metric.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep or not metric.strip():
            raise ContractError(f"--evaluated {item!r}: write QUANT:METRIC=NUMBER[,METRIC=NUMBER], e.g. nf4:accuracy=0.91")
    return quant.strip(), scores
