"""Probability scores, written once: the uncertainty of a model's predictions.

Every function takes class probabilities ``proba`` of shape ``(..., C)`` (any leading axes: one
pool ``(n, C)`` or ``N`` episodes ``(N, n, C)``) and returns one number per row, shape ``(...)``.
:mod:`metaal.observe` builds candidate features from them and :mod:`metaal.strategies` ranks the
pool with them; neither has a copy.

=======================  ====================================================  =================
function                 value                                                 uncertain when
=======================  ====================================================  =================
:func:`top_two`          the two largest probabilities ``p_1 >= p_2``          --
:func:`margin`           ``p_1 - p_2``                                         small
:func:`least_confident`  ``1 - p_1``                                           large
:func:`entropy`          ``-sum_c p_c log p_c`` (nats; ``normalized``: / log C)  large
:func:`disagreement`     ``0.5 * ||p - q||_1`` between two models' predictions  large
=======================  ====================================================  =================
"""
from __future__ import annotations

import numpy as np

#: probabilities are clipped to this before a logarithm
LOG_FLOOR = 1e-12


def top_two(proba: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """The largest and the second largest probability of every row, each of shape ``(...)``.

    ``axis``: the class axis (``1`` for class-major ``(N, C, n)`` arrays, whose class planes are
    contiguous). For up to 16 classes a pass over the classes (the same numbers as
    ``np.partition``, without its slow short-axis kernel); beyond, ``np.partition``.
    """
    Pm = np.moveaxis(np.asarray(proba), axis, 0)  # a view: Pm[c] is class c of every row
    C = Pm.shape[0]
    if C == 1:
        return np.array(Pm[0]), np.zeros(Pm.shape[1:])
    if C <= 16:
        top = np.array(Pm[0])  # a copy, an array also for one row
        second = np.full_like(top, -np.inf)
        for c in range(1, C):
            x = Pm[c]
            np.maximum(second, np.minimum(top, x), out=second)
            np.maximum(top, x, out=top)
        return top, second
    part = np.partition(proba, -2, axis=axis)
    return np.take(part, -1, axis=axis), np.take(part, -2, axis=axis)


def margin(proba: np.ndarray) -> np.ndarray:
    """``p_1 - p_2``, the gap between the two most probable classes; shape ``(...)``."""
    top, second = top_two(proba)
    return top - second


def least_confident(proba: np.ndarray) -> np.ndarray:
    """``1 - max_c p_c``; shape ``(...)``."""
    return 1.0 - np.asarray(proba).max(axis=-1)


def entropy(proba: np.ndarray, normalized: bool = False) -> np.ndarray:
    """Shannon entropy ``-sum_c p_c log p_c`` in nats (probabilities clipped at ``LOG_FLOOR``);
    ``normalized``: divided by ``log C`` (in [0, 1]). Shape ``(...)``."""
    p = np.clip(proba, LOG_FLOOR, 1.0)
    h = -(p * np.log(p)).sum(axis=-1)
    return h / np.log(p.shape[-1]) if normalized else h


def disagreement(proba: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Total-variation distance ``0.5 * sum_c |p_c - q_c|`` between two models' probabilities of
    the same items (a committee of two; 0 = agree, 1 = disjoint); shape ``(...)``."""
    return 0.5 * np.abs(np.asarray(proba) - np.asarray(other)).sum(axis=-1)


def predicted_class(proba: np.ndarray, axis: int = -1) -> np.ndarray:
    """The most probable class of every row (the first on ties, as ``np.argmax``); ``(...)``.

    ``axis``: the class axis. For up to 16 classes a pass over the classes (numpy's argmax over a
    short last axis is slow)."""
    Pm = np.moveaxis(np.asarray(proba), axis, 0)
    C = Pm.shape[0]
    if C > 16:
        return np.argmax(proba, axis=axis)
    top = np.array(Pm[0])  # a copy, an array also for one row
    pred = np.zeros(top.shape, dtype=np.int64)
    for c in range(1, C):
        x = Pm[c]
        pred[x > top] = c
        np.maximum(top, x, out=top)
    return pred
