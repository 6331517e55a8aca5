"""``detzoo inspect``: what a dataset holds and what is wrong with it, in one pass that names every problem
(``api.inspect_dataset``), as tables, JSON and one PNG."""

from .api import inspect_dataset

__all__ = ["inspect_dataset"]
