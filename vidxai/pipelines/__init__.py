"""Pipelines behind the entry points (the only library modules that know about Hydra configs)."""
