"""``adapterhub generate``, ``predict`` and ``chat``: the runtime from the command line.

Each verb builds one :class:`adapterhub.AdapterHub`; ``--domain`` takes a
registry name or reference (``legal``, ``legal@2``) or a PEFT adapter directory.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import AdapterHubError
from ..runtime.routers import FALLBACKS, auto_among
from ._options import add_registry_option, add_threads_option
from ._output import human_bytes, print_fields, print_json, print_table

CHAT_HELP = """commands:
  /domain NAME   answer with adapter NAME (a registry name/ref or a directory); /domain none = bare base
  /domains       list resident and registered adapters
  /base          show the base model
  /quit          leave (or Ctrl-D)
anything else is a message; each is answered on its own (no history)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    generate = subparsers.add_parser("generate", help="generate an answer with a domain adapter (or the bare base)")
    generate.add_argument("prompt", nargs="+", help="the user message(s); several are answered in one batch")
    _hub_options(generate)
    generate.add_argument("--domain", default=None,
                          help="adapter to answer with (default: the bare base); auto: the --router chooses per text")
    generate.add_argument("--max-new-tokens", type=int, default=64)
    generate.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    generate.add_argument("--temperature", type=float, default=None)
    generate.add_argument("--num-beams", type=int, default=None)
    generate.add_argument("--raw", action="store_true", help="feed the text as is (no chat or adapter template)")
    generate.add_argument("--json", action="store_true", help="print JSON")
    generate.set_defaults(handler=_generate)

    predict = subparsers.add_parser("predict", help="classify texts with a classification adapter (label scoring)")
    predict.add_argument("text", nargs="+", help="text(s) to classify")
    predict.add_argument("--domain", required=True,
                         help="the classification adapter; auto: the --router chooses one per text")
    _hub_options(predict)
    predict.add_argument("--scores", action="store_true", help="also print each label's share of the probability")
    predict.add_argument("--json", action="store_true", help="print JSON (label, per-label log-likelihoods and shares)")
    predict.set_defaults(handler=_predict)

    chat = subparsers.add_parser("chat", help="interactive REPL; /domain NAME switches adapters")
    _hub_options(chat)
    chat.add_argument("--domain", default=None, help="adapter to start with (default: the bare base)")
    chat.add_argument("--max-new-tokens", type=int, default=128)
    chat.set_defaults(handler=_chat)


def _hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", default=None, help="base model: alias, local directory or Hugging Face id")
    parser.add_argument("--quantize", choices=["nf4", "fp4", "int8"], default=None, help="load the base quantised")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_registry_option(parser)
    add_threads_option(parser)
    parser.add_argument("--router", default=None, metavar="REF",
                        help="router for --domain auto (adapterhub router build): the text chooses its adapter")
    parser.add_argument("--fallback", choices=FALLBACKS, default="base",
                        help="what --domain auto gets when the router is unsure (default: the bare base)")


def _hub(args: argparse.Namespace) -> Any:
    from ..base import embedded
    from ..runtime import AdapterHub

    hub = AdapterHub(args.base or embedded.DEFAULT_ALIAS, quantize=args.quantize, device=args.device,
                     registry=args.registry)
    if args.router:
        hub.use_router(args.router, fallback=args.fallback)
    return hub


def _generate(args: argparse.Namespace) -> int:
    hub = _hub(args)
    options: dict[str, Any] = {"do_sample": args.sample}
    if args.temperature is not None:
        options["temperature"] = args.temperature
    if args.num_beams is not None:
        options["num_beams"] = args.num_beams
    answers = hub.generate(args.prompt, domain=args.domain, max_new_tokens=args.max_new_tokens,
                           chat=not args.raw, **options)
    if args.json:
        print_json([{"prompt": p, "domain": args.domain, "answer": a} for p, a in zip(args.prompt, answers)])
    else:
        print("\n\n".join(answers))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from ..runtime.mixing import row_label
    from ..scoring import label_probabilities

    from tqdm.auto import tqdm

    hub = _hub(args)
    results, found = [], []
    auto = auto_among(args.domain)[0]
    # auto: routed once here (a text left to the bare base is one clear error), then scored under each choice
    rows = hub.resolve_auto_rows([args.domain] * len(args.text), args.text, task="predict")
    served = [row_label(row) for row in rows]
    with tqdm(total=len(args.text), desc="predict", unit="text", file=sys.stderr, leave=False,
              disable=len(args.text) < 16 or not sys.stderr.isatty()) as bar:  # many texts: show progress
        for start in range(0, len(args.text), 16):
            found += hub.label_scores(args.text[start:start + 16], domains=rows[start:start + 16])
            bar.update(len(args.text[start:start + 16]))
    for text, scores, domain in zip(args.text, found, served):
        shares = {label: round(share, 4) for label, share in label_probabilities(scores).items()}
        results.append({"text": text, "domain": domain, "label": max(scores, key=scores.get),
                        "scores": scores, "probabilities": shares})
    if args.json:
        print_json(results)
        return 0
    for result in results:
        ranked = sorted(result["probabilities"].items(), key=lambda item: -item[1])
        detail = "\t" + " ".join(f"{label}={share:.2f}" for label, share in ranked) if args.scores else ""
        via = f"\t({result['domain']})" if auto else ""
        print(f"{result['label']}\t{result['text']}{via}{detail}")
    return 0


def _chat(args: argparse.Namespace) -> int:
    hub = _hub(args)
    if args.domain:
        hub.switch(args.domain)
    print(f"adapterhub chat on {hub.base.spec.name} — /domains lists adapters, /quit leaves", file=sys.stderr)
    while True:
        try:
            line = input(f"[{hub.domain or 'base'}]> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return 0
        if not line:
            continue
        try:
            if line.startswith("/"):
                if _chat_command(hub, line) == "quit":
                    return 0
            else:
                print(hub.generate(line, max_new_tokens=args.max_new_tokens))
        except AdapterHubError as error:  # the hub stays usable: report and go on
            print(f"error: {error.cli_message}", file=sys.stderr)


def _chat_command(hub: Any, line: str) -> str | None:
    command, _, argument = line.partition(" ")
    argument = argument.strip()
    if command in ("/quit", "/exit", "/q"):
        return "quit"
    if command == "/domain":
        if not argument:
            print(f"domain: {hub.domain or 'none (bare base)'}")
        else:
            hub.switch(None if argument.lower() in ("none", "base") else argument)
            print(f"domain: {hub.domain or 'none (bare base)'}")
    elif command == "/domains":
        _print_domains(hub)
    elif command == "/base":
        spec = hub.base.spec
        print_fields({"base": spec.name, "fingerprint": hub.base.fingerprint, "dtype": spec.dtype,
                      "quantize": spec.quantize or "none", "device": spec.device,
                      "parameters": f"{spec.num_parameters:,}"})
    else:
        print(CHAT_HELP)
    return None


def _print_domains(hub: Any) -> None:
    from ..runtime import sources

    resident = hub.resident()
    rows = [(info.name, "resident", info.method, info.task, human_bytes(info.bytes),
             info.last_used.strftime("%H:%M:%S")) for info in resident]
    names = {info.name for info in resident}
    rows += [(name, "registered", "", "", "", "") for name in sources.registered_names(hub.registry)
             if name not in names]
    if rows:
        print_table(rows, ["name", "state", "method", "task", "size", "last use"])
    else:
        print("no adapters resident or registered; /domain PATH loads a PEFT directory")
