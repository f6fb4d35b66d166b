"""``adapterhub classify`` and ``adapterhub tag``: encoder adapters from the command line.

Both build one :class:`adapterhub.AdapterHub` on an encoder base (default: the embedded
``minilm-l6``) and call :meth:`~adapterhub.AdapterHub.classify` / :meth:`~adapterhub.AdapterHub.tag`;
``--domain`` takes a registry name or reference or a PEFT adapter directory.

    adapterhub classify --domain finance-encoder "Shares jumped 8% after earnings."
    adapterhub tag --domain medical-ner "Started metformin for type 2 diabetes." --json
"""

from __future__ import annotations

import argparse
from typing import Any

from ._options import add_registry_option
from ._output import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    classify = subparsers.add_parser("classify", help="label texts with a sequence-classification adapter (encoder)")
    classify.add_argument("text", nargs="+", help="text(s) to classify, in one batch")
    classify.add_argument("--domain", required=True, help="the classification adapter (name, name@N or directory)")
    _options(classify)
    classify.add_argument("--scores", action="store_true", help="also print every label's probability")
    classify.set_defaults(handler=_classify)

    tag = subparsers.add_parser("tag", help="find named entities with a token-classification adapter (encoder)")
    tag.add_argument("text", nargs="+", help="text(s) to tag, in one batch")
    tag.add_argument("--domain", required=True, help="the NER adapter (name, name@N or directory)")
    _options(tag)
    tag.set_defaults(handler=_tag)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", default=None, help="encoder base: alias, local directory or Hugging Face id "
                                                     "(default: minilm-l6)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_registry_option(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")


def _hub(args: argparse.Namespace) -> Any:
    from ..base import embedded
    from ..runtime import AdapterHub

    return AdapterHub(args.base or embedded.ENCODER_ALIAS, device=args.device, registry=args.registry)


def _classify(args: argparse.Namespace) -> int:
    results = _hub(args).classify(args.text, domain=args.domain)
    rows = [{"text": text, "domain": args.domain, **result} for text, result in zip(args.text, results)]
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        ranked = sorted(row["scores"].items(), key=lambda item: -item[1])
        detail = "\t" + " ".join(f"{label}={p:.2f}" for label, p in ranked) if args.scores else ""
        print(f"{row['label']}\t{row['text']}{detail}")
    return 0


def _tag(args: argparse.Namespace) -> int:
    results = _hub(args).tag(args.text, domain=args.domain)
    if args.json:
        print_json([{"text": text, "domain": args.domain, "entities": entities}
                    for text, entities in zip(args.text, results)])
        return 0
    for text, entities in zip(args.text, results):
        print(text)
        for entity in entities:
            print(f"  {entity['label']:<10} {entity['start']:>4}-{entity['end']:<4} {entity['score']:.2f}  {entity['text']}")
        if not entities:
            print("  (no entities)")
    return 0
