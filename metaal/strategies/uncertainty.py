"""Random sampling and the uncertainty-sampling family."""
from __future__ import annotations

import numpy as np

from metaal import scores
from metaal.state import ALState
from metaal.strategies.base import Strategy, check_k, register


@register("random")
class RandomSampling(Strategy):
    """Uniformly random unlabeled items (the baseline every strategy must beat)."""

    name = "random"
    has_score = False
    needs_model = False

    def select(self, state: ALState, k: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
        unl = state.unlabeled_idx
        k = check_k(k, len(unl))
        rng = rng if rng is not None else np.random.default_rng()
        return np.sort(rng.choice(unl, size=k, replace=False)) if k > 1 else rng.choice(unl, size=1)


def least_confident_score(proba: np.ndarray) -> np.ndarray:
    """``1 - max_c p(c|x)`` for probabilities ``(n, C)`` (:func:`metaal.scores.least_confident`)."""
    return scores.least_confident(proba)


def margin_score(proba: np.ndarray) -> np.ndarray:
    """``-(p_1 - p_2)`` where ``p_1 >= p_2`` are the two largest probabilities; ``(n,)``
    (:func:`metaal.scores.margin`, negated: higher = label first)."""
    return -scores.margin(proba)


def entropy_score(proba: np.ndarray) -> np.ndarray:
    """Shannon entropy ``-sum_c p(c|x) log p(c|x)``; ``(n,)`` (:func:`metaal.scores.entropy`)."""
    return scores.entropy(proba)


@register("least_confident")
class LeastConfident(Strategy):
    """Least-confidence sampling: ``argmax_x 1 - max_c p(c|x)``.

    Reference: Lewis & Gale, "A sequential algorithm for training text classifiers", SIGIR 1994;
    Settles, "Active Learning Literature Survey", 2009, sec. 3.1.
    """

    name = "least_confident"

    def score(self, state: ALState) -> np.ndarray:
        # row-wise and exact: scored over the pool, then the unlabeled rows taken (no copy of
        # the pool's probabilities)
        return least_confident_score(state.proba)[state.unlabeled_idx]


@register("margin")
class Margin(Strategy):
    """Margin sampling: ``argmin_x p(c_1|x) - p(c_2|x)`` for the two most probable classes.

    Reference: Scheffer, Decomain & Wrobel, "Active hidden Markov models for information
    extraction", IDA 2001.
    """

    name = "margin"

    def score(self, state: ALState) -> np.ndarray:
        # row-wise and exact (maxima, one difference): scored over the pool, then the unlabeled
        # rows taken, the same numbers without a copy of the pool's probabilities
        return margin_score(state.proba)[state.unlabeled_idx]


@register("entropy")
class Entropy(Strategy):
    """Entropy sampling: ``argmax_x -sum_c p(c|x) log p(c|x)``.

    Reference: Shannon 1948; Settles 2009, sec. 3.1.
    """

    name = "entropy"

    def score(self, state: ALState) -> np.ndarray:
        return entropy_score(state.proba[state.unlabeled_idx])
