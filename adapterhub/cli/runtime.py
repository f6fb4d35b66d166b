"""``adapterhub generate`` (the runtime issue extends this with domains, predict and chat)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="generate a chat answer with the base model")
    parser.add_argument("prompt", help="the user message")
    parser.add_argument("--base", default=None, help="alias, local directory or Hugging Face id")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace) -> int:
    import torch

    from .. import embedded
    from ..base import load_base

    base = load_base(args.base or embedded.DEFAULT_ALIAS)
    encoded = base.tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}],
                                                 add_generation_prompt=True, return_tensors="pt", return_dict=True)
    encoded = {k: v.to(base.model.device) for k, v in encoded.items()}
    with torch.inference_mode():
        output = base.model.generate(**encoded, max_new_tokens=args.max_new_tokens, do_sample=False)
    print(base.tokenizer.decode(output[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return 0
