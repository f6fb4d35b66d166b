"""The model card (``README.md``) that ``adapterhub push`` uploads beside an adapter.

YAML front matter the Hub understands (``base_model``, ``library_name: peft``,
``tags`` with the domain and ``adapterhub``, ``pipeline_tag``), then a body
for people: what the adapter does, its metrics, the recipe it was trained
with, and how to use it with adapterhub or with plain PEFT.

>>> card = render_model_card({"name": "legal", "version": 2, "domain": "legal", "method": "lora",
...                           "base": {"name": "HuggingFaceTB/SmolLM2-135M-Instruct"},
...                           "metrics": {"accuracy": 0.91}}, repo_id="acme/legal-lora")
>>> card.splitlines()[0], "library_name: peft" in card, "| accuracy | 0.91 |" in card
('---', True, True)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from .. import methods
from ..errors import InvalidAdapterError
from ..registry.manifest import lineage
from .label_snippet import SCRIPT_FILE, has_label_scoring, label_scoring_script, peft_loads

CARD_FILE = "README.md"
"""The model card's file name, beside the adapter's files (on the Hub and in an export)."""

# Hub ids of the embedded aliases, so cards link the real base model.
BASE_HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "minilm-l6": "sentence-transformers/all-MiniLM-L6-v2"}
PIPELINE_TAGS = {"sequence_classification": "text-classification", "token_classification": "token-classification"}
"""The Hub ``pipeline_tag`` of encoder tasks (everything else is ``text-generation``)."""
_AUTO_CLASSES = {"sequence_classification": "AutoModelForSequenceClassification",
                 "token_classification": "AutoModelForTokenClassification"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_base_model(manifest: Mapping[str, Any], adapter_config: Mapping[str, Any] | None = None) -> str | None:
    """The Hub id of the adapter's base (``None`` when it was a local directory or is unknown).

    >>> hub_base_model({"base": {"name": "smollm2-135m-instruct"}})
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    >>> hub_base_model({"base": {"name": "/tmp/tiny-llama"}}) is None
    True
    """
    candidates = [(manifest.get("base") or {}).get("name"), (adapter_config or {}).get("base_model_name_or_path")]
    for name in filter(None, candidates):
        name = BASE_HUB_IDS.get(name, name)
        if _HUB_ID.match(name) and not Path(name).exists():
            return name
    return None


def card_metadata(manifest: Mapping[str, Any], adapter_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The YAML front matter as a dict (keys the Hub indexes)."""
    tags = ["adapterhub", "peft", manifest.get("method") or methods.default(), manifest.get("domain"),
            *(manifest.get("tags") or [])]
    metadata: dict[str, Any] = {}
    base_model = hub_base_model(manifest, adapter_config)
    if base_model:
        metadata["base_model"] = base_model
    task_type = (manifest.get("task") or {}).get("type")
    in_peft = peft_loads(manifest)  # False for adapterhub's own methods: PEFT cannot load them
    metadata.update(library_name="peft" if in_peft else "adapterhub",
                    pipeline_tag=PIPELINE_TAGS.get(task_type, "text-generation"),
                    tags=list(dict.fromkeys(tag for tag in tags if tag and (in_peft or tag != "peft"))))
    return metadata


def render_model_card(manifest: Mapping[str, Any], adapter_config: Mapping[str, Any] | None = None, *,
                      repo_id: str) -> str:
    """The full ``README.md`` text for an adapter's manifest.

    Args:
        manifest: the entry's ``adapterhub.json``.
        adapter_config: its ``adapter_config.json`` (used for the base id and LoRA settings).
        repo_id: where it is pushed (``"org/name"``), for the usage snippets.

    Returns:
        Markdown with YAML front matter.
    """
    front = yaml.safe_dump(card_metadata(manifest, adapter_config), sort_keys=False).strip()
    sections = [f"---\n{front}\n---", _summary(manifest, adapter_config or {}), _lineage_section(manifest),
                _task_section(manifest), _contract_section(manifest), _metrics_section(manifest),
                _recipe_section(manifest),
                _usage_section(manifest, repo_id, hub_base_model(manifest, adapter_config)),
                _label_scoring_section(manifest, hub_base_model(manifest, adapter_config))]
    return "\n\n".join(section for section in sections if section) + "\n"


def _summary(manifest: Mapping[str, Any], adapter_config: Mapping[str, Any]) -> str:
    name, domain = manifest.get("name", "adapter"), manifest.get("domain")
    method = manifest.get("method") or methods.default()
    base = (manifest.get("base") or {}).get("name") or adapter_config.get("base_model_name_or_path") or "unknown"
    lines = [f"# {name}" + (f" — {domain} adapter" if domain and domain != name else ""), ""]
    if manifest.get("description"):
        lines += [manifest["description"], ""]
    lines.append(f"A {_describe(method, adapter_config)} for the base model `{base}`, made with "
                 f"adapterhub as `{name}@{manifest.get('version', '?')}`.")
    fingerprint = (manifest.get("base") or {}).get("fingerprint")
    if fingerprint:
        lines.append(f"Base fingerprint: `{fingerprint}` (adapterhub refuses to load it on other weights).")
    return "\n".join(lines)


def _describe(method: str, adapter_config: Mapping[str, Any]) -> str:
    """``"LoRA adapter (r=8, ...)"``."""
    try:
        spec = methods.get(method)
    except InvalidAdapterError:  # a manifest from a newer adapterhub
        return f"{method} adapter"
    settings = spec.settings(adapter_config)
    return f"{spec.title} adapter" + (f" ({settings})" if settings else "")


def _lineage_section(manifest: Mapping[str, Any]) -> str:
    """For a merged adapter: its parents (exact refs, weight checksums), weights and method."""
    line = lineage(manifest)
    if line is None:
        return ""
    source = manifest["source"]
    rows = [f"| `{p.get('ref')}` | {w:g} | `{p.get('weights_sha256', '')}` | `{p.get('base_fingerprint')}` |"
            for p, w in zip(source.get("parents") or [], source.get("weights") or [])]
    return "\n".join(["## Lineage", "", f"Made by adapterhub as a {line}.", "",
                      "| parent | weight | adapter_model.safetensors sha256 | base fingerprint |",
                      "| --- | --- | --- | --- |", *rows])


def _task_section(manifest: Mapping[str, Any]) -> str:
    task = manifest.get("task") or {"type": "generation"}
    labels = ", ".join(f"`{label}`" for label in task.get("labels", []))
    if task.get("type") == "sequence_classification":
        return (f"## Task\n\nSequence classification into {labels} by a head trained with the adapter (saved in "
                "`modules_to_save`); the text goes in as it is. adapterhub: `hub.classify(text, domain=...)`.")
    if task.get("type") == "token_classification":
        return (f"## Task\n\nNamed entities of the types {labels}, one BIO tag per word (`O`, then `B-`/`I-` of each "
                "type in that order) from a head trained with the adapter. adapterhub: `hub.tag(text, domain=...)` "
                "returns character spans.")
    if task.get("type") != "classification":
        return "## Task\n\nFree text generation."
    lines = ["## Task", "", f"Classification into {labels}. Prompt template:", "", "```text",
             task.get("prompt_template", "{text}"), "```"]
    if task.get("system_prompt"):
        lines += ["", f"System prompt: {task['system_prompt']}"]
    return "\n".join(lines)


def _contract_section(manifest: Mapping[str, Any]) -> str:
    """The serving contract (defaults, stop strings, response schema, quantisations evaluated on); "" without one."""
    from ..registry.contract import contract_view

    view = contract_view(manifest)
    if view is None:
        return ""
    body = json.dumps({key: value for key, value in view.items() if key != "template"}, indent=2)
    return "\n".join(["## Serving contract", "", "adapterhub applies these where a request is silent (README "
                      "\"Structured output\"); the prompt template is the task's.", "", "```json", body, "```"])


def _metrics_section(manifest: Mapping[str, Any]) -> str:
    metrics = manifest.get("metrics") or {}
    if not metrics:
        return "## Metrics\n\nNo metrics were recorded."
    rows = [f"| {key} | {_cell(value)} |" for key, value in sorted(metrics.items())]
    return "\n".join(["## Metrics", "", "| metric | value |", "| --- | --- |", *rows])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _recipe_section(manifest: Mapping[str, Any]) -> str:
    recipe = manifest.get("recipe")
    if not recipe:
        return "## Recipe\n\nNo training recipe was recorded (the adapter was imported)."
    return f"## Recipe\n\n```yaml\n{yaml.safe_dump(dict(recipe), sort_keys=False).strip()}\n```"


def _usage_section(manifest: Mapping[str, Any], repo_id: str, base_model: str | None) -> str:
    base = base_model or "<the base model>"
    if not peft_loads(manifest):  # adapterhub's own method: no PEFT snippet that could not work
        spec = methods.get(manifest["method"])
        return f"""## Usage

A {spec.title} adapter (`peft_type: {spec.peft_type}`): adapterhub's own method, which **plain PEFT
cannot load**. Use adapterhub:

```bash
adapterhub pull {repo_id}
```

Anywhere adapterhub takes an adapter reference, `hf://{repo_id}@<revision>` pulls it on demand."""
    task = manifest.get("task") or {}
    auto_class = _AUTO_CLASSES.get(task.get("type"))
    if auto_class:
        labels = list(task.get("labels") or [])
        if task.get("type") == "token_classification":
            labels = ["O", *(f"{prefix}-{label}" for label in labels for prefix in ("B", "I"))]
        load = (f"base = {auto_class}.from_pretrained(\n    \"{base}\", num_labels={len(labels)}, "
                f"id2label={dict(enumerate(labels))!r})")
    else:
        auto_class, load = "AutoModelForCausalLM", f'base = AutoModelForCausalLM.from_pretrained("{base}")'
    return f"""## Usage

With adapterhub (verifies checksums and base compatibility, records the commit):

```bash
adapterhub pull {repo_id}
```

```python
from adapterhub.hf import pull
record = pull("{repo_id}")
```

Anywhere adapterhub takes an adapter reference, `hf://{repo_id}@<revision>` pulls it on demand.

With plain PEFT:

```python
from transformers import {auto_class}, AutoTokenizer
from peft import PeftModel

{load}
tokenizer = AutoTokenizer.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{repo_id}")
```"""


def _label_scoring_section(manifest: Mapping[str, Any], base_model: str | None) -> str:
    """Decoder classifiers: how to reproduce adapterhub's label scoring in plain PEFT (``label_scoring.py``)."""
    if not has_label_scoring(manifest):
        return ""
    script = label_scoring_script(manifest["task"], base_id=base_model or "<the base model>")
    return (f"## Label scoring with plain PEFT\n\nThe adapter answers by scoring every label, not by generating "
            f"text. This script (`{SCRIPT_FILE}` beside the weights) gives the scores adapterhub gives:\n\n"
            f"```python\n{script.strip()}\n```")
