"""metaal.scores: the probability scores every observer and strategy uses, against their
definitions, for one row, a pool, N episodes and class-major arrays."""
from __future__ import annotations

import numpy as np
import pytest

from metaal import scores


@pytest.mark.parametrize("C", [1, 2, 3, 16, 17, 40])
@pytest.mark.parametrize("shape", [(), (7,), (3, 5)])
def test_scores_match_their_definitions(C, shape):
    rng = np.random.default_rng(C)
    P = rng.dirichlet(np.ones(C), size=shape) if shape else rng.dirichlet(np.ones(C))
    P[..., 0] = np.round(P[..., 0], 1)  # some exact ties between rows and classes
    ordered = np.sort(P, axis=-1)
    top, second = scores.top_two(P)
    np.testing.assert_array_equal(top, ordered[..., -1])
    np.testing.assert_array_equal(second, ordered[..., -2] if C > 1 else np.zeros(shape))
    np.testing.assert_array_equal(scores.margin(P), top - second)
    np.testing.assert_array_equal(scores.predicted_class(P), np.argmax(P, axis=-1))
    np.testing.assert_allclose(scores.least_confident(P), 1 - ordered[..., -1])
    h = -(np.clip(P, 1e-12, 1) * np.log(np.clip(P, 1e-12, 1))).sum(-1)
    np.testing.assert_allclose(scores.entropy(P), h)
    if C > 1:
        np.testing.assert_allclose(scores.entropy(P, normalized=True), h / np.log(C))
    if len(shape) == 2:  # class-major (N, C, n): the same numbers from contiguous class planes
        Pt = np.ascontiguousarray(np.moveaxis(P, -1, 1))
        np.testing.assert_array_equal(scores.top_two(Pt, axis=1)[1], second)
        np.testing.assert_array_equal(scores.predicted_class(Pt, axis=1), np.argmax(P, axis=-1))


def test_disagreement_is_total_variation():
    p = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    q = np.array([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(scores.disagreement(p, q), [0.6, 0.0])
