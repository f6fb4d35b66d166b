"""Training from YAML recipes: schema, data to tokens, the trainer, checkpoints, evaluation.

>>> from adapterhub.training import train
>>> train("recipes/finance.yaml").record.ref  # doctest: +SKIP
'finance@1'

"""

from .recipe import Recipe
from .recipe_files import load_recipe
from .merge import MergeResult, merge_adapters
from .trainer import Trainer, TrainResult, train

__all__ = ["MergeResult", "Recipe", "TrainResult", "Trainer", "load_recipe", "merge_adapters", "train"]
