"""JSON-schema grammars for constrained decoding: compiled once per schema, one matcher state per row.

The engine is `llguidance <https://github.com/guidance-ai/llguidance>`_ (README "Structured output" says why
it was chosen over xgrammar and outlines-core). A :class:`Grammars` belongs to one tokenizer: it turns a
schema (a dict, a pydantic model class, a JSON string, or ``"json_object"`` for any JSON object) into a
:class:`CompiledSchema` cached under the schema's canonical text, and hands every row its own
:class:`GrammarState` (a cheap copy of the compiled matcher). A row's state masks that row's logits
before sampling and advances on the token chosen, so rows of different schemas, and rows with none, share
one decode step.

Hostile schemas are bounded three ways: the schema text (:data:`MAX_SCHEMA_BYTES`) and nesting
(:data:`MAX_SCHEMA_DEPTH`) are checked before compiling, and llguidance's own fuel limits bound the
lexer and parser (a schema over them is refused, never run for long).

>>> grammars = Grammars(tokenizer, vocab_size=49152)  # doctest: +SKIP
>>> state = grammars.state({"type": "object", "properties": {"x": {"type": "integer"}}})  # doctest: +SKIP
>>> state.mask(logits); state.accept(int(logits.argmax()))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .errors import SchemaError

MAX_SCHEMA_BYTES = 64 * 1024
"""Longest schema text compiled (a 20,000-value enum is ~400 KiB and takes llguidance ~80 ms)."""
MAX_SCHEMA_DEPTH = 48
"""Deepest JSON nesting of the schema document (each nested object property adds two levels)."""
CACHE_SIZE = 256
"""Compiled schemas kept per tokenizer (least recently used dropped first)."""
JSON_OBJECT = {"type": "object"}
"""The schema OpenAI's ``response_format: {"type": "json_object"}`` stands for: any JSON object."""
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""How constrained JSON is written: Python's ``json.dumps`` layout (the one :func:`adapterhub.training.data.output_text`
trains answers in), and no other whitespace (no runs of blanks for a weak model to loop in)."""


def schema_dict(schema: Any) -> dict[str, Any]:
    """The JSON schema ``schema`` stands for: a dict as it is, a pydantic model's ``model_json_schema()``, a JSON
    string parsed, ``"json_object"`` for any object.

    Raises:
        SchemaError: none of those, or not a JSON object.

    >>> schema_dict("json_object")
    {'type': 'object'}
    """
    if isinstance(schema, str):
        if schema == "json_object":
            return dict(JSON_OBJECT)
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as error:
            raise SchemaError(f"the response schema is not valid JSON ({error})") from None
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
        closed = (getattr(schema, "model_config", {}) or {}).get("extra") != "allow"
        schema = schema.model_json_schema()
        if closed:  # a pydantic model ignores unknown keys: generating them only wastes tokens
            schema = _closed(schema)
    if not isinstance(schema, dict):
        raise SchemaError(f"a response schema must be a JSON schema object or a pydantic model class, "
                          f"not {type(schema).__name__}")
    return schema


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with ``additionalProperties: false`` on every object that lists properties and says nothing."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return schema


def canonical(schema: dict[str, Any]) -> str:
    """The text a schema is compiled from and cached under: its objects' ``properties`` in the order their
    ``required`` lists them, then the rest as given. An answer writes its keys in ``properties``' order, and a
    stored manifest sorts its keys (lists keep their order): a contract's schema answers as its author wrote it.

    >>> canonical({"properties": {"b": {}, "a": {}}, "required": ["b", "a"]})
    '{"properties":{"b":{},"a":{}},"required":["b","a"]}'
    """
    try:
        return json.dumps(_in_required_order(schema), separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise SchemaError(f"the response schema cannot be written as JSON ({error})") from None


def _in_required_order(node: Any) -> Any:
    """A copy of ``node`` with every object's ``properties`` listed in its ``required`` order, then the rest."""
    if isinstance(node, list):
        return [_in_required_order(item) for item in node]
    if not isinstance(node, dict):
        return node
    copy = {key: _in_required_order(value) for key, value in node.items()}
    properties, required = copy.get("properties"), node.get("required")
    if isinstance(properties, dict) and isinstance(required, list):
        first = [name for name in dict.fromkeys(required) if isinstance(name, str) and name in properties]
        copy["properties"] = {**{name: properties[name] for name in first}, **properties}
    return copy


def check(schema: Any) -> dict[str, Any]:
    """``schema`` as a dict, refused now if constrained decoding could never use it (no tokenizer needed).

    Raises:
        SchemaError: malformed, over the size or nesting bounds, or naming the feature llguidance lacks.

    >>> check({"type": "object", "properties": {"n": {"type": "integer"}}})
    {'type': 'object', 'properties': {'n': {'type': 'integer'}}}
    """
    import llguidance

    schema = schema_dict(schema)
    key = canonical(schema)
    _check_bounds(schema, key)
    try:
        problem = llguidance.LLMatcher.validate_grammar(
            llguidance.LLMatcher.grammar_from_json_schema(key, defaults=JSON_LAYOUT))
    except ValueError as error:
        problem = str(error)
    if problem and not problem.startswith("WARNING"):
        raise SchemaError(f"the response schema is not supported: {_first_line(problem)}")
    return schema


@dataclass(frozen=True)
class CompiledSchema:
    """One schema compiled for one tokenizer: the template every row's matcher is copied from."""

    key: str  # canonical schema text
    schema: dict[str, Any]
    matcher: Any  # llguidance.LLMatcher in its initial state (never advanced)
    compile_s: float  # seconds the first compilation took


class Grammars:
    """Compiled schemas of one tokenizer, cached per schema (thread-safe).

    Args:
        tokenizer: a fast Hugging Face tokenizer (the base's).
        vocab_size: width of the model's logits (may exceed the tokenizer's vocabulary; the rest is masked).
        cache_size: compiled schemas kept.
    """

    def __init__(self, tokenizer: Any, *, vocab_size: int | None = None, cache_size: int = CACHE_SIZE) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = int(vocab_size or len(tokenizer))
        self.cache_size = cache_size
        self._engine: Any = None
        self._cache: OrderedDict[str, CompiledSchema] = OrderedDict()
        self._lock = threading.Lock()

    def _llg_tokenizer(self) -> Any:
        if self._engine is None:  # built once (~0.3 s for a 49k vocabulary), under the lock
            import llguidance.hf

            self._engine = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size)
        return self._engine

    def compile(self, schema: Any) -> CompiledSchema:
        """``schema`` compiled (from the cache when it was compiled before).

        Raises:
            SchemaError: malformed, over the size or nesting bounds, or a feature llguidance does not implement
                (the message names it, e.g. ``Unimplemented keys: ["uniqueItems"]``).
        """
        schema = schema_dict(schema)
        key = canonical(schema)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        _check_bounds(schema, key)
        compiled = self._compile(schema, key)
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return compiled

    def _compile(self, schema: dict[str, Any], key: str) -> CompiledSchema:
        import llguidance

        start = time.perf_counter()
        with self._lock:
            tokenizer = self._llg_tokenizer()
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(key, defaults=JSON_LAYOUT)
        except ValueError as error:
            raise SchemaError(f"the response schema cannot be compiled: {error}") from None
        matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise SchemaError(f"the response schema is not supported: {_first_line(matcher.get_error())}")
        return CompiledSchema(key=key, schema=schema, matcher=matcher, compile_s=time.perf_counter() - start)

    def state(self, schema: Any) -> GrammarState:
        """A fresh matcher state for one row constrained by ``schema`` (compiled or taken from the cache)."""
        compiled = schema if isinstance(schema, CompiledSchema) else self.compile(schema)
        return GrammarState(compiled, compiled.matcher.deep_copy(), self.vocab_size)

    def __len__(self) -> int:
        return len(self._cache)


class GrammarState:
    """One row's place in its grammar: masks the row's logits, advances on each chosen token."""

    _shifts: Any = None

    def __init__(self, compiled: CompiledSchema, matcher: Any, vocab_size: int) -> None:
        import torch

        self.compiled = compiled
        self.matcher = matcher
        self.vocab_size = vocab_size
        self._bitmask = torch.zeros((vocab_size + 31) // 32, dtype=torch.int32)
        if GrammarState._shifts is None:
            GrammarState._shifts = torch.arange(32, dtype=torch.int32)

    def allowed(self) -> Any:
        """Bool ``[vocab]``: the tokens the grammar allows next (end-of-text once it accepts)."""
        self.matcher.unsafe_compute_mask_ptr(self._bitmask.data_ptr(), self._bitmask.numel() * 4)
        bits = (self._bitmask.unsqueeze(-1) >> GrammarState._shifts) & 1
        return bits.view(-1)[:self.vocab_size].bool()

    def mask(self, logits: Any) -> Any:
        """``logits`` (one row, ``[vocab]``) with every token the grammar forbids set to ``-inf``, in place."""
        allowed = self.allowed()
        width = min(int(logits.shape[-1]), self.vocab_size)
        logits[:width].masked_fill_(~allowed[:width], float("-inf"))
        if logits.shape[-1] > width:
            logits[width:] = float("-inf")
        return logits

    def accept(self, token: int) -> None:
        """Advance past ``token``.

        Raises:
            SchemaError: the grammar does not allow it (a caller that did not :meth:`mask` first).
        """
        if not self.matcher.consume_token(int(token)):
            raise SchemaError(f"token {token} breaks the response schema: {_first_line(self.matcher.get_error())}")

    @property
    def complete(self) -> bool:
        """The grammar can take no more tokens: the JSON value is closed (the answer ends here)."""
        return bool(self.matcher.is_stopped())

    @property
    def accepting(self) -> bool:
        """What was generated so far is a complete value (end-of-text is allowed next)."""
        return bool(self.matcher.is_accepting())


def _check_bounds(schema: dict[str, Any], key: str) -> None:
    if len(key.encode()) > MAX_SCHEMA_BYTES:
        raise SchemaError(f"the response schema is {len(key.encode()) // 1024} KiB; at most "
                          f"{MAX_SCHEMA_BYTES // 1024} KiB is compiled (split it, or use shorter enums)")
    if nesting(schema) > MAX_SCHEMA_DEPTH:
        raise SchemaError(f"the response schema nests more than {MAX_SCHEMA_DEPTH} levels deep; flatten it or use "
                          "$defs with $ref")


def nesting(value: Any) -> int:
    """How deep ``value`` nests lists and dicts (a scalar: 0), iteratively: a hostile schema cannot recurse.

    >>> nesting({"a": [1, {"b": 2}]})
    3
    """
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _first_line(message: str) -> str:
    return (message or "unknown error").strip().splitlines()[0][:300]
