"""A router in memory: its head over pooled base features, and the per-text decision (adapter, mix or base).

Features are standardised (the training rows' ``mean`` / ``scale``) and L2-normalised; then

* ``prototype`` head: probabilities = softmax(``temperature`` x cosine to each adapter's prototype);
* ``linear`` head: probabilities = softmax(``weight`` @ f + ``bias``).

A text goes to its top adapter when that adapter's probability is at least ``min_probability`` and its
Mahalanobis distance to the nearest adapter's training mean at most ``max_distance`` (both set on validation
data at build time, see :mod:`.fit`); otherwise the ``fallback`` decides: ``"base"`` (the bare model), ``"mix"``
(the top two through a weighted mix, weighted by their probabilities) or ``"error"``.

>>> router.decide(features, fallback="base")[0].decision  # doctest: +SKIP
'adapter'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ...errors import RoutingError
from ...registry.routers import GATE
from .fit import distances, head_features

FALLBACKS = ("base", "mix", "error")


@dataclass(frozen=True)
class RouteDecision:
    """What the router chose for one text, and why.

    ``choice`` is what the row runs: an exact ref (``"finance@1"``), a ``{ref: weight}`` mix, or ``None``
    (the bare base). ``adapter`` / ``probability`` are the top candidate, ``runner_up`` the second.
    """

    decision: str  # "adapter" | "mix" | "base"
    choice: Any
    adapter: str
    probability: float
    runner_up: str | None
    runner_up_probability: float | None
    distance: float  # to the nearest adapter's training texts (squared Mahalanobis per width; in-domain ~1)
    reason: str = ""

    @property
    def label(self) -> str:
        """What served the row, as one string: ``finance@1``, ``finance@1:0.6+medical@1:0.4`` or ``base``."""
        if self.choice is None:
            return "base"
        if isinstance(self.choice, Mapping):
            return "+".join(f"{name}:{weight:.6g}" for name, weight in self.choice.items())
        return str(self.choice)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "served_by": self.label}


@dataclass(frozen=True)
class Router:
    """A loaded router entry (see :mod:`adapterhub.registry.routers` for its files)."""

    ref: str
    config: Mapping[str, Any]
    tensors: Mapping[str, Any]

    @property
    def names(self) -> list[str]:
        """The adapter names it chooses between, in its head's order."""
        return [entry["name"] for entry in self.config["adapters"]]

    @property
    def refs(self) -> dict[str, str]:
        """``{name: exact ref}`` the router was built on (what routed rows run)."""
        return {entry["name"]: entry["ref"] for entry in self.config["adapters"]}

    @property
    def layer(self) -> int:
        return int(self.config["layer"])

    @property
    def reads_embeddings(self) -> bool:
        """Whether its features put the token embeddings' mean before the block's (format 2's gate)."""
        return self.config.get("gate") == GATE

    def candidates(self, among: Sequence[str] | None) -> list[int]:
        """Indices of the adapters a call may get (``None``: all).

        Raises:
            RoutingError: a name the router does not know, or nothing left.
        """
        if among is None:
            return list(range(len(self.names)))
        names = [name.split("@", 1)[0] for name in among]
        unknown = [name for name in names if name not in self.names]
        if unknown:
            raise RoutingError(f"router {self.ref} chooses between {', '.join(self.names)}; it cannot choose "
                               f"{', '.join(unknown)}", fix="restrict auto to some of those, e.g. 'auto:"
                               f"{','.join(self.names[:2])}'")
        picked = [index for index, name in enumerate(self.names) if name in names]
        if not picked:
            raise RoutingError(f"router {self.ref}: no adapter is left to choose from")
        return picked

    def probabilities(self, features: Any, among: Sequence[int]) -> tuple[Any, Any]:
        """``([texts, len(among)] probabilities, [texts] distance to the nearest adapter of all it knows)``.

        The distance looks at every adapter: a text near one the call may not get is still in-domain text.
        """
        import torch

        t = {key: value.float() for key, value in self.tensors.items()}
        standard = (head_features(features, t).float() - t["mean"]) / t["scale"]
        unit = torch.nn.functional.normalize(standard, dim=-1)
        if self.config["head"] == "linear":
            logits = unit @ t["weight"].T + t["bias"]
        else:
            logits = unit @ t["prototypes"].T * float(self.config.get("temperature", 20.0))
        index = torch.tensor(list(among))
        return logits[:, index].softmax(-1), distances(features, t).min(-1).values

    def decide(self, features: Any, *, fallback: str = "base", among: Sequence[str] | None = None,
               mixable: Mapping[str, bool] | None = None) -> list[RouteDecision]:
        """One :class:`RouteDecision` per feature row.

        Args:
            features: from :func:`~adapterhub.runtime.routers.features.features` (``embedding=``
                :attr:`reads_embeddings`).
            fallback: ``"base"``, ``"mix"`` or ``"error"`` for rows under the thresholds.
            among: adapter names the call may get (``"auto:finance,legal"``, a key's allow list).
            mixable: ``{name: whether it can join a weighted mix}`` (default: every adapter can).

        Raises:
            RoutingError: an unknown fallback or candidate, or ``fallback="error"`` with a row under the thresholds.
        """
        if fallback not in FALLBACKS:
            raise RoutingError(f"fallback={fallback!r} is not one of {', '.join(FALLBACKS)}")
        picked = self.candidates(among)
        probs, nearest = self.probabilities(features, picked)
        min_probability = float(self.config.get("min_probability", 0.0))
        max_distance = float(self.config.get("max_distance", float("inf")))
        decisions = []
        for row in range(probs.shape[0]):
            order = probs[row].argsort(descending=True).tolist()
            top = order[0]
            second = order[1] if len(order) > 1 else None
            name, p1, distance = self.names[picked[top]], float(probs[row, top]), float(nearest[row])
            runner = None if second is None else self.names[picked[second]]
            p2 = None if second is None else float(probs[row, second])
            common = dict(adapter=name, probability=p1, runner_up=runner, runner_up_probability=p2, distance=distance)
            if p1 >= min_probability and distance <= max_distance:
                decisions.append(RouteDecision("adapter", self.refs[name], **common))
                continue
            why = (f"distance {distance:.3f} > {max_distance:.3f} (unlike the adapters' texts)"
                   if distance > max_distance else f"probability {p1:.3f} < {min_probability:.3f}")
            decisions.append(self._fallback(fallback, why, common, mixable or {}))
        return decisions

    def _fallback(self, fallback: str, why: str, common: dict[str, Any], mixable: Mapping[str, bool]) -> RouteDecision:
        if fallback == "error":
            raise RoutingError(f"router {self.ref} is not confident about a text ({why}; best {common['adapter']})",
                               fix="name the adapter, or use fallback='base' or 'mix'")
        runner = common["runner_up"]
        if fallback == "mix" and runner is not None:
            if mixable.get(common["adapter"], True) and mixable.get(runner, True):
                total = common["probability"] + common["runner_up_probability"]
                weights = {self.refs[common["adapter"]]: common["probability"] / total,
                           self.refs[runner]: common["runner_up_probability"] / total}
                return RouteDecision("mix", weights, **common, reason=why)
            why += f"; {common['adapter']} and {runner} cannot be mixed (not both LoRA-family), so the bare base"
        return RouteDecision("base", None, **common, reason=why)
