"""Promotion gates: small, safe expressions over evaluation metrics, parsed here (never ``eval``).

A gate is one or more comparisons joined by ``and`` (or commas)::

    accuracy >= prod - 0.5
    macro_f1 >= 80 and loss <= holder.loss * 1.1

Names are the candidate's metrics (``accuracy``, ``macro_f1``, ``micro_f1``, ``loss``, ``perplexity``,
``json_valid`` …). The current holder's values are ``holder.<metric>`` (also ``<channel>.<metric>``, e.g.
``prod.loss``); a bare ``holder`` or channel name means the holder's value of the first metric named in the
comparison. Rates (``accuracy``, the F1 scores, ``json_valid``, ``exact_match``) are in percent, as people read them:
``accuracy >= prod - 0.5`` allows half a point less than the holder. Numbers, ``+ - * /`` and parentheses
are the whole language.

A comparison that refers to the holder passes when the channel has no holder yet (nothing to compare).

>>> gate = parse_gate("accuracy >= prod - 0.5", channel="prod")
>>> [check.passed for check in gate.check({"accuracy": 0.90}, {"accuracy": 0.91})]
[False]
>>> gate.check({"accuracy": 0.91}, {"accuracy": 0.91})[0].describe()
'accuracy >= prod - 0.5: 91 >= 90.5 (candidate 91, holder 91)'
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import ConfigError

PERCENT_METRICS = frozenset({"accuracy", "macro_f1", "micro_f1", "json_valid", "exact_match"})
HOLDER = "holder"
_TOKEN = re.compile(r"\s*(?:(?P<number>\d+(?:\.\d*)?|\.\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)"
                    r"|(?P<op>>=|<=|==|!=|[<>+\-*/(),]))")
_COMPARE: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le, ">": operator.gt,
                                                      "<": operator.lt, "==": operator.eq, "!=": operator.ne}
_ARITH: dict[str, Callable[[float, float], float]] = {"+": operator.add, "-": operator.sub, "*": operator.mul,
                                                     "/": operator.truediv}
MAX_GATE_CHARS = 500


@dataclass(frozen=True)
class Check:
    """One comparison of a gate, evaluated: both sides' figures and whether it held."""

    text: str
    left: float | None
    right: float | None
    passed: bool
    candidate: float | None  # the metric the comparison is about, both sides
    holder: float | None
    note: str = ""

    def describe(self) -> str:
        """``"accuracy >= prod - 0.5: 90 >= 90.5 (candidate 90, holder 91)"``."""
        if self.note:
            return f"{self.text}: {self.note}"
        both = f" (candidate {_fmt(self.candidate)}, holder {_fmt(self.holder)})" if self.holder is not None else ""
        op = next(op for op in _COMPARE if f" {op} " in f" {self.text} " or op in self.text)
        return f"{self.text}: {_fmt(self.left)} {op} {_fmt(self.right)}{both}"

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.text, "left": self.left, "right": self.right, "passed": self.passed,
                "candidate": self.candidate, "holder": self.holder, "note": self.note, "text": self.describe()}


@dataclass(frozen=True)
class _Clause:
    text: str
    left: tuple
    op: str
    right: tuple
    metric: str  # the first metric named: what a bare holder name and the report refer to

    @property
    def uses_holder(self) -> bool:
        return _uses_holder(self.left) or _uses_holder(self.right)


@dataclass(frozen=True)
class Gate:
    """A parsed gate; :meth:`check` evaluates it on the candidate's and the holder's metrics."""

    text: str
    clauses: tuple[_Clause, ...]

    @property
    def metrics(self) -> set[str]:
        """Every metric the gate reads."""
        return {name for clause in self.clauses for side in (clause.left, clause.right) for name in _names(side)}

    def check(self, candidate: Mapping[str, Any], holder: Mapping[str, Any] | None) -> list[Check]:
        """Evaluate every comparison (``holder=None``: the channel has no holder yet).

        Raises:
            ConfigError: a metric the gate names is not among those the evaluation reported.
        """
        checks = []
        for clause in self.clauses:
            if clause.uses_holder and holder is None:
                checks.append(Check(clause.text, None, None, True, _soft(candidate, clause.metric), None,
                                    note="no holder yet: nothing to compare against"))
                continue
            values = {"candidate": candidate, HOLDER: holder or {}}
            left = _evaluate(clause.left, values, clause.metric)
            right = _evaluate(clause.right, values, clause.metric)
            checks.append(Check(clause.text, left, right, _COMPARE[clause.op](round(left, 9), round(right, 9)),
                                _soft(candidate, clause.metric), _soft(holder, clause.metric)))
        return checks


def parse_gate(text: str, *, channel: str) -> Gate:
    """Parse ``text`` (see the module docstring); ``channel`` is also accepted as the holder's name.

    Raises:
        ConfigError: the gate is empty, too long, or not made of comparisons of metrics and numbers.
    """
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_GATE_CHARS:
        raise ConfigError(f"gate {str(text)[:80]!r} must be 1-{MAX_GATE_CHARS} characters of comparisons such as "
                          "'accuracy >= prod - 0.5'")
    parts = [part.strip() for part in re.split(r"\band\b|,", text) if part.strip()]
    if not parts:
        raise ConfigError(f"gate {text!r} has no comparison; write e.g. 'accuracy >= prod - 0.5'")
    return Gate(text.strip(), tuple(_parse_clause(part, channel) for part in parts))


def _parse_clause(text: str, channel: str) -> _Clause:
    tokens = _tokens(text)
    compares = [i for i, (kind, value) in enumerate(tokens) if kind == "op" and value in _COMPARE]
    if len(compares) != 1:
        raise ConfigError(f"gate part {text!r} needs exactly one comparison (>=, <=, >, <, ==, !=); "
                          "join several with 'and'")
    at = compares[0]
    left, right = _Parser(tokens[:at], text, channel).parse(), _Parser(tokens[at + 1:], text, channel).parse()
    named = [name for side in (left, right) for name in _names(side)]
    if not named:
        raise ConfigError(f"gate part {text!r} names no metric; compare a metric such as accuracy or loss")
    return _Clause(text, left, tokens[at][1], right, named[0])


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, at = [], 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        match = _TOKEN.match(text, at)
        if match is None:
            raise ConfigError(f"gate part {text!r}: cannot read {text[at:].strip()[:20]!r}; use metric names, "
                              "numbers, + - * / ( ) and one comparison")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        at = match.end()
    return tokens


class _Parser:
    """Recursive descent over ``expr := term (+|- term)*``, ``term := factor (*|/ factor)*``."""

    def __init__(self, tokens: list[tuple[str, str]], text: str, channel: str) -> None:
        self.tokens, self.at, self.text, self.channel = tokens, 0, text, channel

    def parse(self) -> tuple:
        if not self.tokens:
            raise ConfigError(f"gate part {self.text!r}: a side of the comparison is empty")
        node = self._expr()
        if self.at != len(self.tokens):
            raise ConfigError(f"gate part {self.text!r}: unexpected {self.tokens[self.at][1]!r}")
        return node

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _expr(self) -> tuple:
        node = self._term()
        while (token := self._peek()) and token[1] in ("+", "-"):
            self.at += 1
            node = ("op", token[1], node, self._term())
        return node

    def _term(self) -> tuple:
        node = self._factor()
        while (token := self._peek()) and token[1] in ("*", "/"):
            self.at += 1
            node = ("op", token[1], node, self._factor())
        return node

    def _factor(self) -> tuple:
        token = self._peek()
        if token is None:
            raise ConfigError(f"gate part {self.text!r} ends too early")
        self.at += 1
        kind, value = token
        if kind == "number":
            return ("num", float(value))
        if value == "-":
            return ("op", "-", ("num", 0.0), self._factor())
        if value == "(":
            node = self._expr()
            if self._peek() != ("op", ")"):
                raise ConfigError(f"gate part {self.text!r}: a '(' is not closed")
            self.at += 1
            return node
        if kind == "name":
            owner, _, metric = value.partition(".")
            if owner in (HOLDER, self.channel):
                return ("holder", metric or None)
            if metric:
                raise ConfigError(f"gate part {self.text!r}: {value!r} — write holder.<metric> or "
                                  f"{self.channel}.<metric> for the current holder's values")
            return ("metric", value)
        raise ConfigError(f"gate part {self.text!r}: unexpected {value!r}")


def _names(node: tuple) -> list[str]:
    if node[0] == "metric" or (node[0] == "holder" and node[1]):
        return [node[1]]
    if node[0] == "op":
        return _names(node[2]) + _names(node[3])
    return []


def _uses_holder(node: tuple) -> bool:
    return node[0] == "holder" or (node[0] == "op" and (_uses_holder(node[2]) or _uses_holder(node[3])))


def _evaluate(node: tuple, values: dict[str, Mapping[str, Any]], metric: str) -> float:
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "metric":
        return _value(values["candidate"], node[1], "candidate")
    if kind == "holder":
        return _value(values[HOLDER], node[1] or metric, "holder")
    left, right = _evaluate(node[2], values, metric), _evaluate(node[3], values, metric)
    if node[1] == "/" and right == 0:
        raise ConfigError("the gate divides by zero")
    return _ARITH[node[1]](left, right)


def _value(metrics: Mapping[str, Any] | None, name: str, side: str) -> float:
    value = (metrics or {}).get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        known = sorted(k for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise ConfigError(f"the gate reads {name!r}, which the {side}'s evaluation did not report "
                          f"(it reported: {', '.join(known) or 'nothing'})")
    return float(value) * 100 if name in PERCENT_METRICS else float(value)


def _soft(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    try:
        return _value(metrics, name, "")
    except ConfigError:
        return None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
