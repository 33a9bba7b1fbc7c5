"""Query strategies (heuristics) and their registry.

``metaal.strategies.get("margin")`` returns a fresh instance; ``names()`` lists the registered
heuristics; ``policy:PATH`` resolves to a learned policy registered by the agents layer (entry point
group ``metaal.strategies``).

Registered heuristics: ``random``, ``least_confident``, ``margin``, ``entropy``
(:mod:`~metaal.strategies.uncertainty`); ``qbc_vote``, ``qbc_kl``, ``bald``
(:mod:`~metaal.strategies.committee`); ``egl``, ``badge`` (:mod:`~metaal.strategies.gradient`);
``density``, ``coreset``, ``dbal`` (:mod:`~metaal.strategies.diversity`); ``eer``, ``xpal``
(:mod:`~metaal.strategies.expected`); ``falcun``, ``dropquery`` (:mod:`~metaal.strategies.batch`);
``albl`` (:mod:`~metaal.strategies.bandit`); ``typiclust``, ``probcover``, ``maxherding``
(:mod:`~metaal.strategies.coverage`, model-free: they work from zero labels); ``oracle``
(:mod:`~metaal.strategies.oracle`), a reference that reads the test labels and runs in simulation
only.

A strategy that needs a model (:attr:`Strategy.needs_model`) runs behind
:class:`ColdStart` in every loop: until two classes are labeled a model-free strategy
(:data:`COLD_FALLBACK`, ``random``) picks for it.

Users' strategies: ``module:Class`` and ``path.py:Class`` name a :class:`Strategy` subclass, and
:class:`FunctionStrategy` wraps a plain function ``f(estimator, X_unlabeled) -> scores``
(:mod:`~metaal.strategies.custom`; docs/strategies.md).
"""
from metaal.observe import OBS_VERSION, Observer
from metaal.strategies import (
    bandit,  # noqa: F401  (registers albl; imports the others first)
    batch,  # noqa: F401  (registers falcun, dropquery)
    committee,  # noqa: F401  (registers qbc_vote, qbc_kl, bald)
    coverage,  # noqa: F401  (registers typiclust, probcover, maxherding)
    diversity,  # noqa: F401  (registers density, coreset, dbal)
    expected,  # noqa: F401  (registers eer, xpal)
    gradient,  # noqa: F401  (registers egl, badge)
    oracle,  # noqa: F401  (registers oracle: simulation only, reads test labels)
    uncertainty,  # noqa: F401  (registers random, least_confident, margin, entropy)
)
from metaal.strategies.base import (
    COLD_FALLBACK,
    ColdStart,
    Strategy,
    check_k,
    get,
    load_strategy_class,
    names,
    needs_model,
    parse_list,
    reads_truth,
    register,
    register_factory,
    top_k,
    with_cold_start,
)
from metaal.strategies.coverage import coverage_candidates
from metaal.strategies.custom import FunctionStrategy
from metaal.strategies.uncertainty import entropy_score, least_confident_score, margin_score


def make_observer(k: int = 32, version: str = OBS_VERSION, **kwargs: int) -> Observer:
    """The :class:`~metaal.observe.Observer` of an observation version, with its heuristics:
    ``obs-v2`` offers MaxHerding's next picks (:func:`~metaal.strategies.coverage.coverage_candidates`)
    as candidates. Every caller above this layer (the env, imitation, a learned policy) builds its
    observer here, so that each sees the same candidates."""
    return Observer(k=k, version=version, cover=coverage_candidates, **kwargs)

__all__ = [
    "COLD_FALLBACK",
    "ColdStart",
    "FunctionStrategy",
    "Strategy",
    "check_k",
    "entropy_score",
    "get",
    "least_confident_score",
    "load_strategy_class",
    "make_observer",
    "margin_score",
    "names",
    "needs_model",
    "parse_list",
    "reads_truth",
    "register",
    "register_factory",
    "top_k",
    "with_cold_start",
]
