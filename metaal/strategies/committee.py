"""Committee-based strategies: query-by-committee (vote entropy, mean KL to the consensus) and
BALD, all estimated with a committee of bootstrap-resampled copies of the state's learner.

The committee is built afresh at every ``select`` (the labeled set changed since the last one):
``M`` clones of ``state.learner`` (:meth:`metaal.learners.Learner.clone`), each fitted on a
bootstrap resample of the labeled set that holds at least two classes, drawn from the ``rng``
handed to ``select`` (same seed, same committee). Only the unlabeled items are predicted.
"""
from __future__ import annotations

import numpy as np

from metaal.errors import ConfigError
from metaal.state import ALState
from metaal.strategies.base import Strategy, check_k, register, top_k
from metaal.strategies.uncertainty import entropy_score

_EPS = 1e-12


def bootstrap_indices(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions ``(m,)`` of a bootstrap resample of labels ``y`` ``(m,)`` holding >= 2 classes.

    If the labels hold two classes or more but the resample happens to hold a single one, its
    last draw is replaced by a random item of another class (a resample of a one-class labeled set
    stays one-class; the learner then predicts the smoothed label frequencies).
    """
    m = len(y)
    idx = rng.integers(0, m, size=m)
    if len(np.unique(y)) >= 2 and len(np.unique(y[idx])) < 2:
        other = np.flatnonzero(y != y[idx[0]])
        idx[-1] = other[rng.integers(0, len(other))]
    return idx


def committee_proba(
    state: ALState, rng: np.random.Generator, n_members: int = 5, rows: np.ndarray | None = None
) -> np.ndarray:
    """Probabilities of a bootstrap committee, shape ``(M, n_rows, C)``.

    :param rows: pool positions to predict (default: the unlabeled items).
    """
    if n_members < 2:
        raise ConfigError(f"a committee needs at least 2 members (got {n_members})")
    rows = state.unlabeled_idx if rows is None else rows
    lab = state.labeled_idx
    X_lab, y_lab = state.X_pool[lab], state.labels[lab]
    X_rows = state.X_pool[rows]
    out = np.empty((n_members, len(rows), state.n_classes))
    for m in range(n_members):
        b = bootstrap_indices(y_lab, rng)
        member = state.learner.clone()
        member.fit(X_lab[b], y_lab[b])
        out[m] = member.predict_proba(X_rows)
    return out


def vote_entropy(P: np.ndarray) -> np.ndarray:
    """Vote entropy ``-sum_c V(c)/M log(V(c)/M)`` of committee probabilities ``P`` ``(M, n, C)``
    where ``V(c)`` counts the members whose top class is ``c``; shape ``(n,)``."""
    M, n, C = P.shape
    votes = np.zeros((n, C))
    top = P.argmax(axis=2)  # (M, n)
    for m in range(M):
        votes[np.arange(n), top[m]] += 1.0
    return entropy_score(votes / M)


def mean_kl_to_consensus(P: np.ndarray) -> np.ndarray:
    """``1/M sum_m KL(P_m || P_mean)`` for ``P`` ``(M, n, C)``; shape ``(n,)``."""
    Pc = np.clip(P, _EPS, 1.0)
    cons = Pc.mean(axis=0)
    return (Pc * (np.log(Pc) - np.log(cons)[None])).sum(axis=2).mean(axis=0)


def mutual_information(P: np.ndarray) -> np.ndarray:
    """BALD's ``H[mean_m P_m] - mean_m H[P_m]`` for ``P`` ``(M, n, C)``; shape ``(n,)``, >= 0."""
    M, n, C = P.shape
    h_mean = entropy_score(P.mean(axis=0))
    mean_h = entropy_score(P.reshape(M * n, C)).reshape(M, n).mean(axis=0)
    return np.maximum(h_mean - mean_h, 0.0)


class _CommitteeStrategy(Strategy):
    """Shared ``select``: committee probabilities on the unlabeled items, then the top-``k``
    scores (ties keep pool order)."""

    def __init__(self, n_members: int = 5) -> None:
        if int(n_members) < 2:
            raise ConfigError(f"{self.name}: committee size must be >= 2 (got {n_members})")
        self.n_members = int(n_members)

    def _disagreement(self, P: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score(self, state: ALState, rng: np.random.Generator | None = None) -> np.ndarray:  # type: ignore[override]
        rng = rng if rng is not None else np.random.default_rng(0)
        return self._disagreement(committee_proba(state, rng, self.n_members))

    def select(self, state: ALState, k: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
        unl = state.unlabeled_idx
        k = check_k(k, len(unl))
        return unl[top_k(self.score(state, rng), k)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_members={self.n_members})"


@register("qbc_vote")
class QBCVoteEntropy(_CommitteeStrategy):
    """Query-by-committee with vote entropy.

    ``score(x) = -sum_c V(c,x)/M log(V(c,x)/M)``, where ``V(c,x)`` is the number of the ``M``
    committee members (bootstrap-resampled copies of the learner, ``n_members``, default 5) whose
    prediction for ``x`` is ``c``.

    Reference: Seung, Opper & Sompolinsky, "Query by committee", COLT 1992; Dagan & Engelson,
    "Committee-based sampling for training probabilistic classifiers", ICML 1995; bootstrap
    committees ("query by bagging"): Abe & Mamitsuka, ICML 1998.
    """

    name = "qbc_vote"

    def _disagreement(self, P: np.ndarray) -> np.ndarray:
        return vote_entropy(P)


@register("qbc_kl")
class QBCKL(_CommitteeStrategy):
    """Query-by-committee with the mean Kullback-Leibler divergence to the consensus.

    ``score(x) = 1/M sum_m KL(P_m(.|x) || P_C(.|x))`` with ``P_C = 1/M sum_m P_m`` over ``M``
    bootstrap-resampled copies of the learner (``n_members``, default 5).

    With the same committee this equals BALD's ensemble estimate: ``1/M sum_m KL(P_m || P_C) =
    H[P_C] - 1/M sum_m H[P_m]`` (the generalized Jensen-Shannon divergence), so ``qbc_kl`` and
    ``bald`` with the same ``n_members`` and seed pick the same items.

    Reference: McCallum & Nigam, "Employing EM and pool-based active learning for text
    classification", ICML 1998; Settles 2009, sec. 3.2.
    """

    name = "qbc_kl"

    def _disagreement(self, P: np.ndarray) -> np.ndarray:
        return mean_kl_to_consensus(P)


@register("bald")
class BALD(_CommitteeStrategy):
    """Bayesian active learning by disagreement, estimated with an ensemble.

    ``score(x) = H[1/M sum_m P_m(.|x)] - 1/M sum_m H[P_m(.|x)]``: the mutual information between
    the label and the model parameters, with the posterior over models approximated by ``M``
    bootstrap-resampled copies of the learner (``n_members``, default 5). MC dropout (Gal et al.)
    would sample the members from one network instead; the estimator of the mutual information
    is the same. Learners in this package are scikit-learn estimators, so the ensemble is used.
    With an ensemble the mutual information equals the mean KL divergence to the consensus, so
    ``bald`` scores like ``qbc_kl`` with the same committee (see :class:`QBCKL`).

    Reference: Houlsby, Huszar, Ghahramani & Lengyel, "Bayesian active learning for
    classification and preference learning", arXiv:1112.5745, 2011; Gal, Islam & Ghahramani,
    "Deep Bayesian active learning with image data", ICML 2017.
    """

    name = "bald"

    def _disagreement(self, P: np.ndarray) -> np.ndarray:
        return mutual_information(P)
