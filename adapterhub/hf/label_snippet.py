"""A short script that reproduces adapterhub's label scoring with plain PEFT + transformers.

``adapterhub registry export`` writes it as ``label_scoring.py`` beside a classification adapter, and the model
card shows it. It computes what :meth:`adapterhub.AdapterHub.label_scores` computes (and
:func:`adapterhub.prompts.score_labels` defines): the adapter's prompt template filled with the text and the
labels joined by ``", "`` (wrapped in the chat template when the adapter was trained with it), then for every
label the summed log-probability of its tokens followed by the end-of-sequence token.

>>> script = label_scoring_script({"type": "classification", "labels": ["a", "b"], "prompt_template": "{text}",
...                                "chat": False}, base_id="org/base")
>>> "LABELS = ['a', 'b']" in script and "BASE = os.environ.get(\\"BASE_MODEL\\", 'org/base')" in script
True
"""

from __future__ import annotations

from typing import Any, Mapping

from .. import methods
from ..errors import InvalidAdapterError

SCRIPT_FILE = "label_scoring.py"

_SCRIPT = '''\
"""Label scoring with plain PEFT + transformers: the scores adapterhub's hub.label_scores gives.

Each label's score is the summed log-probability of its tokens and the end-of-sequence token after the
prompt; the best score wins.  Run:  python {file} "text to classify"
(BASE_MODEL=/path/to/a/local/copy of the base, if the Hub is out of reach; ADAPTER= another folder or repo id).
"""
import os
import sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

BASE = os.environ.get("BASE_MODEL", {base!r})
ADAPTER = os.environ.get("ADAPTER", str(Path(__file__).resolve().parent))
LABELS = {labels!r}
TEMPLATE = {template!r}
SYSTEM = {system!r}
CHAT = {chat!r}  # trained with the base's chat template around the prompt

tokenizer = AutoTokenizer.from_pretrained(BASE)
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE, torch_dtype=torch.float32), ADAPTER)
model.eval()


def prompt(text):
    message = TEMPLATE.replace("{{labels}}", ", ".join(LABELS)).replace("{{text}}", text)
    if not (CHAT and tokenizer.chat_template):
        return message
    messages = ([{{"role": "system", "content": SYSTEM}}] if SYSTEM else []) + [{{"role": "user", "content": message}}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def label_scores(text):
    prompt_ids = tokenizer(prompt(text), add_special_tokens=False)["input_ids"]
    scores = {{}}
    for label in LABELS:
        answer = tokenizer(label, add_special_tokens=False)["input_ids"]
        answer += [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        logits = model(input_ids=torch.tensor([prompt_ids + answer])).logits[0].float()
        logprobs = logits[len(prompt_ids) - 1:-1].log_softmax(-1)  # position i predicts answer token i
        scores[label] = sum(logprobs[i, token].item() for i, token in enumerate(answer))
    return scores


if __name__ == "__main__":
    for text in sys.argv[1:]:
        scores = label_scores(text)
        print(max(scores, key=scores.get), {{label: round(score, 3) for label, score in scores.items()}})
'''


def label_scoring_script(task: Mapping[str, Any], *, base_id: str) -> str:
    """The script's text for a decoder classification ``task`` (the manifest's ``task``) on ``base_id``."""
    return _SCRIPT.format(file=SCRIPT_FILE, base=base_id, labels=list(task.get("labels") or []),
                          template=task.get("prompt_template") or "{text}", system=task.get("system_prompt"),
                          chat=bool(task.get("chat", True)))


def peft_loads(manifest: Mapping[str, Any]) -> bool:
    """Whether plain PEFT loads the entry's method (an unknown method, from a newer adapterhub: assumed so)."""
    try:
        return methods.get(manifest.get("method") or methods.default()).peft_loads
    except InvalidAdapterError:
        return True


def has_label_scoring(manifest: Mapping[str, Any]) -> bool:
    """Whether the entry is a decoder classifier that plain PEFT loads (so the script applies)."""
    return (manifest.get("task") or {}).get("type") == "classification" and peft_loads(manifest)
