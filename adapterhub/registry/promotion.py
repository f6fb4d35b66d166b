"""Gated promotion, canaries and rollback of a channel: what :meth:`Registry.promote` and
:meth:`Registry.rollback` do.

A promotion holds the channel's lock for its whole length: it evaluates the candidate and the
current holder on the same data with the caller's evaluator (``adapterhub.lifecycle.ServingEvaluator``
scores them through the serving path), checks the gate, and only then moves the tag (write-ahead, see
:mod:`.channels`). A refused promotion writes nothing.

>>> result = registry.promote("finance@4", channel="prod", gate="accuracy >= prod - 0.5",
...                           evaluate=ServingEvaluator(base))  # doctest: +SKIP
>>> result.row.describe()  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError, PromotionRefusedError
from .channels import Channels, ChannelState, HistoryRow, default_who, read_stats, validate_channel
from .gates import parse_gate

Evaluator = Callable[[str, Any], dict[str, Any]]
"""``evaluate(ref, data)``: the metrics of registry entry ``ref`` on ``data`` (``None``: its recipe's test file)."""


@dataclass(frozen=True)
class PromotionResult:
    """What a promotion did: the history row written (with the gate's checks and both sides' metrics)."""

    row: HistoryRow

    @property
    def ref(self) -> str:
        version = (self.row.canary or {}).get("version", self.row.to_version)
        return f"{self.row.name}@{version}"


def parse_percent(value: Any) -> float:
    """``"10%"``, ``"10"`` or ``10`` -> ``10.0`` (strictly between 0 and 100).

    >>> parse_percent("10%")
    10.0
    """
    try:
        percent = float(str(value).strip().removesuffix("%"))
    except ValueError:
        percent = float("nan")
    if not 0 < percent < 100:
        raise ConfigError(f"canary share {value!r} must be a percentage between 0 and 100, e.g. '10%'")
    return percent


def promote(registry: Any, channels: Channels, ref: str, *, channel: str, gate: str | None = None, data: Any = None,
            evaluate: Evaluator | None = None, canary: Any = None, who: str | None = None,
            crash_at: str | None = None) -> PromotionResult:
    """Move ``channel`` to the entry ``ref`` means (or start a canary of it) if the gate holds; see
    :meth:`adapterhub.registry.Registry.promote`."""
    validate_channel(channel)
    record = registry.get(ref)
    name, version = record.name, record.version
    percent = parse_percent(canary) if canary is not None else None
    parsed = parse_gate(gate, channel=channel) if gate is not None else None
    if parsed is not None and evaluate is None:
        raise ConfigError(f"the gate {gate!r} needs metrics: pass evaluate= (adapterhub.lifecycle.ServingEvaluator)")
    with channels.locked(name, channel):
        state = channels.state(name, channel)
        _check_movable(state, version, canary=percent is not None)
        metrics: dict[str, Any] = {}
        if evaluate is not None:
            metrics["candidate"] = evaluate(record.ref, data)
            if state.holder is not None:
                metrics["holder"] = evaluate(f"{name}@{state.holder}", data)
        checks = parsed.check(metrics["candidate"], metrics.get("holder")) if parsed is not None else []
        failed = [check for check in checks if not check.passed]
        if failed:
            raise PromotionRefusedError(
                f"{record.ref} was not promoted to {name}@{channel}: the gate failed — "
                + "; ".join(check.describe() for check in failed) + f". {name}@{channel} still is "
                + (f"{name}@{state.holder}" if state.holder is not None else "unset") + "; nothing was changed")
        row = channels.move(name, channel, op="canary" if percent is not None else "promote", expect=state,
                            holder=state.holder if percent is not None else version,
                            canary={"version": version, "percent": percent} if percent is not None else None,
                            who=who or default_who(), gate=parsed.text if parsed else None,
                            checks=[check.to_dict() for check in checks], metrics=metrics,
                            data=str(data) if data is not None else (metrics.get("candidate") or {}).get("data"),
                            crash_at=crash_at)
    return PromotionResult(row)


def finish(registry: Any, channels: Channels, name: str, *, channel: str, who: str | None = None) -> PromotionResult:
    """End the running canary by making its candidate the holder (its figures go into the history row)."""
    validate_channel(channel)
    with channels.locked(name, channel):
        state = channels.state(name, channel)
        if state.canary is None:
            raise PromotionRefusedError(f"{name}@{channel} runs no canary; start one with "
                                        f"promote {name}@<version> --channel {channel} --canary 10%")
        row = channels.move(name, channel, op="finish", expect=state, holder=state.canary, canary=None,
                            who=who or default_who(), metrics=_canary_figures(registry, name, channel))
    return PromotionResult(row)


def rollback(registry: Any, channels: Channels, name: str, *, channel: str, who: str | None = None) -> PromotionResult:
    """End a running canary (the holder stays), else point the channel back at its previous holder."""
    validate_channel(channel)
    with channels.locked(name, channel):
        state = channels.state(name, channel)
        if state.canary is not None:
            row = channels.move(name, channel, op="rollback", expect=state, holder=state.holder, canary=None,
                                who=who or default_who(), metrics=_canary_figures(registry, name, channel))
            return PromotionResult(row)
        previous = previous_holder(channels.history(name), channel)
        if previous is None:
            raise PromotionRefusedError(f"{name}@{channel} has no previous holder to roll back to (history: "
                                        f"`adapterhub registry history {name}`); nothing was changed")
        row = channels.move(name, channel, op="rollback", expect=state, holder=previous, canary=None,
                            who=who or default_who())
    return PromotionResult(row)


def previous_holder(rows: list[HistoryRow], channel: str) -> int | None:
    """The holder before the latest promotion not yet rolled back (promotions push, rollbacks pop)."""
    stack: list[int] = []
    for row in rows:
        if row.channel != channel or row.state != "committed" or row.from_version == row.to_version:
            continue
        if row.op in ("promote", "finish") and row.from_version is not None:
            stack.append(row.from_version)
        elif row.op == "rollback" and stack:
            stack.pop()
    return stack[-1] if stack else None


class ChannelMoves:
    """The channel methods of :class:`~adapterhub.registry.Registry` (which provides ``get``, ``root`` and
    ``channels``)."""

    channels: Channels

    def promote(self, ref: str, *, channel: str, gate: str | None = None, data: Any = None,
                evaluate: Evaluator | None = None, canary: Any = None,
                who: str | None = None) -> PromotionResult:
        """Point ``name@channel`` at ``ref`` (or start a canary of it) if the gate holds on fresh evaluations.

        Args:
            ref: the candidate (``"finance@4"``).
            channel: the channel tag (``"prod"``).
            gate: e.g. ``"accuracy >= prod - 0.5"`` (see :mod:`adapterhub.registry.gates`); needs ``evaluate``.
            data: the evaluation file (``None``: the recipe's test file).
            evaluate: ``evaluate(ref, data) -> metrics``, run on the candidate and the current holder;
                :class:`adapterhub.lifecycle.ServingEvaluator` scores them through the serving path.
            canary: ``"10%"``: the candidate serves that share of ``name@channel`` requests, the holder stays.
            who: recorded in the history (default: the OS user).

        Returns:
            A :class:`~adapterhub.registry.PromotionResult` with the history row written.

        Raises:
            PromotionRefusedError: the gate failed (both figures named), another promotion of the channel
                runs or won, or a canary runs; nothing was changed.
            ConfigError: a malformed gate, channel or share.

        >>> registry.promote("finance@4", channel="prod", gate="accuracy >= prod - 0.5",
        ...                  evaluate=ServingEvaluator(base)).ref  # doctest: +SKIP
        'finance@4'
        """
        return promote(self, self.channels, ref, channel=channel, gate=gate, data=data, evaluate=evaluate,
                       canary=canary, who=who)

    def finish_canary(self, name: str, *, channel: str, who: str | None = None) -> PromotionResult:
        """Make the running canary of ``name@channel`` its holder (``adapterhub promote --finish``)."""
        return finish(self, self.channels, name, channel=channel, who=who)

    def rollback(self, name: str, *, channel: str, who: str | None = None) -> PromotionResult:
        """End ``name@channel``'s canary, or point it back at its previous holder (no evaluation).

        Raises:
            PromotionRefusedError: no previous holder, or another promotion runs; nothing was changed.

        >>> registry.rollback("finance", channel="prod").row.to_version  # doctest: +SKIP
        3
        """
        return rollback(self, self.channels, name, channel=channel, who=who)

    def history(self, name: str) -> list[HistoryRow]:
        """Every channel move of ``name``, oldest first (survives ``rebuild_index``: it is not only in SQLite)."""
        return self.channels.history(name)

    def channel(self, name: str, channel: str) -> ChannelState:
        """Who holds ``name@channel`` now (and the canary, if one runs)."""
        return self.channels.state(name, channel)


def _check_movable(state: ChannelState, version: int, *, canary: bool) -> None:
    ref = f"{state.name}@{version}"
    where = f"{state.name}@{state.channel}"
    if state.canary is not None:
        raise PromotionRefusedError(f"a canary of {state.name}@{state.canary} runs on {where}; end it first with "
                                    f"promote --finish or rollback (nothing was changed)")
    if state.holder == version:
        raise PromotionRefusedError(f"{where} already is {ref}; nothing was changed")
    if canary and state.holder is None:
        raise PromotionRefusedError(f"{where} has no holder for a canary to share traffic with; promote {ref} "
                                    "without --canary first")


def _canary_figures(registry: Any, name: str, channel: str) -> dict[str, Any]:
    figures = read_stats(registry.root, name, channel, clear=True)
    return {"served": figures} if figures else {}
