"""The Hugging Face Hub (named ``hf`` so it is never confused with :class:`adapterhub.AdapterHub`).

``pull`` and ``push`` move adapters between a :class:`~adapterhub.Registry` and
a Hub repository, pinned to a commit.

>>> from adapterhub import Registry
>>> from adapterhub.hf import pull
>>> record = pull(Registry(), "org/finance-lora")  # doctest: +SKIP
"""

from .client import HUB_SCHEME, HubRef
from .sync import PushResult, is_hub_ref, parse_hub_ref, pull, push

__all__ = ["HUB_SCHEME", "HubRef", "PushResult", "is_hub_ref", "parse_hub_ref", "pull", "push"]
