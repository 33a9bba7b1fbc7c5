"""Protocols by name: how an active-learning run starts and grows, in one flag.

A :class:`Protocol` fixes the initial labeled set, the budget, the labels per step, an optional
class-imbalance transform of the data and the headline metric. ``metaal compare``, ``metaal
evaluate`` and ``metaal label`` take ``--protocol NAME``; explicit flags (``--initial``,
``--budget``, ``--batch-size``, ``--metric``) override the preset.

=============  =========  ======  =====  =========  =========
name           initial    budget  batch  imbalance  headline
=============  =========  ======  =====  =========  =========
``standard``   10         100     1      none       accuracy
``cold``       0          30      1      none       accuracy
``batch``      10         200     20     none       accuracy
``imbalanced`` 10         100     1      0.05       macro-F1
=============  =========  ======  =====  =========  =========

``standard`` is the protocol where public benchmarks find margin sampling the strongest strategy
that does not peek at labels; ``cold`` starts from zero labels (typicality and coverage matter),
``batch`` asks for labels in batches of 20 (diversity matters), ``imbalanced`` keeps the largest
class whole and shrinks every other class to 5% of the data (:func:`metaal.data.imbalance`;
finding the rare classes matters, so macro-F1 is the headline).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from metaal.data import Dataset, apply_transforms
from metaal.errors import ConfigError

#: the metrics a curve holds; the headline one ranks strategies and gives ``norm_aulc``
METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class Protocol:
    """The numbers of a protocol.

    :param name: the protocol's name.
    :param initial: random initial labels (two classes), or 0 for a cold start.
    :param budget: labels to acquire after the initial set.
    :param batch_size: labels per step.
    :param imbalance: share of each minority class after :func:`metaal.data.imbalance` (None:
        the data as they are).
    :param metric: the headline metric, ``accuracy`` or ``macro_f1``.
    """

    name: str
    initial: int
    budget: int
    batch_size: int = 1
    imbalance: float | None = None
    metric: str = "accuracy"

    def apply(self, datasets: Sequence[Dataset]) -> list[Dataset]:
        """The datasets this protocol runs on: with :attr:`imbalance`, each one's imbalanced
        subsample (``NAME?imbalance=R``), unless its spec already named an imbalance."""
        if self.imbalance is None:
            return list(datasets)
        out = []
        for ds in datasets:
            if "imbalance=" in ds.name:
                out.append(ds)
                continue
            # the transform (and its name) of a NAME?imbalance=R spec
            out.append(apply_transforms(ds, {"imbalance": f"{self.imbalance:g}"}, spec=ds.name))
        return out


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("standard", initial=10, budget=100),
        Protocol("cold", initial=0, budget=30),
        Protocol("batch", initial=10, budget=200, batch_size=20),
        Protocol("imbalanced", initial=10, budget=100, imbalance=0.05, metric="macro_f1"),
    )
}
DEFAULT_PROTOCOL = "standard"


def get_protocol(name: str) -> Protocol:
    """The protocol of a name.

    :raises ConfigError: for an unknown name, listing the known ones.
    """
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r} (known: {', '.join(PROTOCOLS)})")
    return PROTOCOLS[name]


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r} (use {' or '.join(METRICS)})")
    return metric


def resolve(
    name: str | None,
    initial: int | None = None,
    budget: int | None = None,
    batch_size: int | None = None,
    metric: str | None = None,
) -> Protocol:
    """The protocol ``name`` (default ``standard``) with the explicitly given numbers in place of
    its own (None keeps the preset's)."""
    p = get_protocol(name or DEFAULT_PROTOCOL)
    given = {"initial": initial, "budget": budget, "batch_size": batch_size, "metric": metric}
    p = replace(p, **{k: v for k, v in given.items() if v is not None})
    check_metric(p.metric)
    return p


__all__ = ["DEFAULT_PROTOCOL", "METRICS", "PROTOCOLS", "Protocol", "check_metric", "get_protocol", "resolve"]
