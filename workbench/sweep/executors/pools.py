"""Hardware pools: a cluster run measures each variant on each pool that ``cluster.targets`` names.

A pool is the set of nodes that offer the custom resource ``pool:<name>`` (``ray start --resources``).
Each (variant, pool) pair is a variant of its own, ``<id>@pool=<name>`` (``<id>,pool=<name>`` after a
grid point), so records, selection, export and resume need nothing new.
"""

from __future__ import annotations

import re
from dataclasses import replace

from workbench.errors import UsageError
from workbench.recipe.spec import Recipe
from workbench.sweep.space import Variant

POOL_RESOURCE_PREFIX = "pool:"
_POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_POOLED_ID = re.compile(r"[@,]pool=([A-Za-z0-9][A-Za-z0-9._-]*)$")


def pool_names(recipe: Recipe) -> list[str]:
    """The pools the recipe measures on, in its order; empty: no pools (any node measures)."""
    return list(recipe.cluster.targets) if recipe.cluster is not None else []


def pooled_id(variant_id: str, pool: str) -> str:
    """``ort-fp32@pool=cpu-small``; after a grid point ``ort-fp32@threads=2,pool=cpu-small``."""
    return f"{variant_id}{',' if '@' in variant_id else '@'}pool={pool}"


def pool_of(variant_id: str) -> str | None:
    """The pool a pooled variant id names; None for a variant of a run without pools."""
    found = _POOLED_ID.search(variant_id)
    return found.group(1) if found else None


def on_pools(variants: list[Variant], recipe: Recipe) -> list[Variant]:
    """Each variant once per pool (baseline first, then the next variant on every pool); as given without pools."""
    pools = pool_names(recipe)
    if not pools:
        return variants
    bad = [name for name in pools if not _POOL_NAME.match(name)]
    if bad:
        raise UsageError(f"pool names are letters, digits, '.', '_' and '-': {', '.join(map(repr, bad))}")
    if recipe.search.strategy != "grid":
        raise UsageError("cluster.targets measures every variant on every pool: use search.strategy: grid")
    return [replace(v, id=pooled_id(v.id, pool)) for v in variants for pool in pools]
