"""``python -m adapterhub`` (also what ``accelerate launch -m adapterhub`` runs)."""

from .cli import main

raise SystemExit(main())
