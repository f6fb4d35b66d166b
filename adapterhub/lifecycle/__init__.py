"""From training to production: evaluating adapters through the serving path for gated promotions.

>>> from adapterhub.lifecycle import ServingEvaluator
>>> registry.promote("finance@4", channel="prod", gate="accuracy >= prod - 0.5",
...                  evaluate=ServingEvaluator(hub))  # doctest: +SKIP
"""

from .evaluation import ServingEvaluator

__all__ = ["ServingEvaluator"]
