"""Stream policies: request the arriving item's label, or predict its class.

A stream policy is a callable ``policy(obs, source) -> action`` on the observation of
:class:`metaal.stream.StreamEpisode` (``source`` is the episode, or a ``metaal/Stream-v0`` env
around one): the request action ``source.request_action`` or a class. Every loop (the env, the
benchmark, the stream labeling session) calls the same policies on the same core.

* :class:`ThresholdStreamPolicy` (``threshold``, ``threshold:T``): request when the (smoothed)
  top probability is below a threshold; by default the expected-reward threshold of the costs.
* :class:`VariableUncertaintyStreamPolicy` (``vu:B``) and :class:`SplitStreamPolicy`
  (``split:B``): the variable uncertainty and split strategies of Zliobaite, Bifet, Pfahringer and
  Holmes, "Active Learning With Drifting Streaming Data" (IEEE TNNLS 2014), with the
  estimated-budget manager of scikit-activeml's ``skactiveml.stream`` (1.0.1): the same decisions
  for the same sequence of top probabilities (tests/test_stream_policies.py checks it). ``B`` is
  the fraction of items whose label may be requested, estimated over a sliding window of ``w``
  items (``u_t = u_{t-1} (w - 1) / w + requested_t``; a request is allowed while
  ``u_t / w < B``). Variable uncertainty requests iff the raw top probability is below a
  threshold ``theta`` (starting at 1) that shrinks by ``(1 - s)`` after a request and grows by
  ``(1 + s)`` after a prediction; split requests at random (with probability ``B``) on a fraction
  ``v`` of the items and uses variable uncertainty on the others.
* ``policy:PATH`` / ``policy:stream-default``: a learned stream policy, registered by the agents
  layer (entry point group :data:`ENTRY_POINT_GROUP`).

:func:`get_stream_policy` builds one by name; a policy with an internal state (the budget
managers) restarts whenever the source is at its first item.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable

import numpy as np

from metaal.errors import ConfigError
from metaal.stream import bayes_threshold, smoothed_top

#: Entry point group of ``PREFIX:ARG`` stream policy factories (``policy`` from metaal.agents).
ENTRY_POINT_GROUP = "metaal.stream_policies"
#: Stream policy names without an argument, and with one (``NAME:ARG``).
STREAM_POLICY_NAMES = ("threshold", "threshold:T", "vu:BUDGET", "split:BUDGET", "policy:PATH")


def episode_of(source: Any) -> Any:
    """The :class:`~metaal.stream.StreamEpisode` of ``source``: an env (``.unwrapped.episode``)
    or the episode itself."""
    base = source.unwrapped if hasattr(source, "unwrapped") else source
    return getattr(base, "episode", base)


def argmax_class(obs: dict[str, np.ndarray], ep: Any) -> int:
    return int(np.argmax(obs["proba"][: ep.n_classes]))


class ThresholdStreamPolicy:
    """The fixed-threshold heuristic: predict the most probable class, or request the label when
    the (smoothed) top probability ``q`` is below a threshold.

    The learner's raw probabilities are over-confident after a handful of labels (a class never
    seen gets probability ~0), so by default the top probability ``p`` is shrunk towards uniform
    with the number ``n`` of labels requested so far: ``q = (n * p + 1) / (n + C)``
    (``smoothing=False``: ``q = p``).

    With ``threshold=None`` the threshold maximizes the expected reward under ``q``: predicting
    earns ``q * correct_reward - (1 - q) * wrong_penalty`` in expectation, requesting
    ``-request_cost``, so request iff
    ``q < (wrong_penalty - request_cost) / (correct_reward + wrong_penalty)``.
    """

    def __init__(self, threshold: float | None = None, smoothing: bool = True) -> None:
        self.threshold = threshold
        self.smoothing = bool(smoothing)
        self.name = "threshold" if threshold is None else f"threshold{threshold:g}"

    def threshold_for(self, source: Any) -> float:
        """The threshold in use on ``source`` (the expected-reward one when none was given)."""
        ep = episode_of(source)
        if self.threshold is not None:
            return float(self.threshold)
        return bayes_threshold(ep.request_cost, ep.wrong_penalty, ep.correct_reward)

    def confidence(self, obs: dict[str, np.ndarray], source: Any) -> float:
        """``q``: the (smoothed) top probability of the arriving item."""
        ep = episode_of(source)
        p = float(np.max(obs["proba"][: ep.n_classes]))
        if not self.smoothing:
            return p
        return smoothed_top(p, ep.n_requests, ep.n_classes)

    def __call__(self, obs: dict[str, np.ndarray], source: Any) -> int:
        ep = episode_of(source)
        if ep.n_requests == 0 or self.confidence(obs, ep) < self.threshold_for(ep):
            return int(ep.request_action)
        return argmax_class(obs, ep)


class ZliobaiteBudget:
    """The estimated-budget state of Zliobaite et al. (2014) for one stream.

    :param budget: fraction of items that may be requested (``0 <= budget <= 1``).
    :param theta: initial threshold on the top probability.
    :param s: threshold step.
    :param w: window of the budget estimate.
    :param v: split only: fraction of items decided at random (``0``: variable uncertainty).
    :param seed: split only: seed of the ``RandomState`` (scikit-activeml's generator).
    """

    def __init__(self, budget: float, theta: float = 1.0, s: float = 0.01, w: int = 100, v: float = 0.0,
                 seed: int | None = 0) -> None:
        if not 0.0 <= budget <= 1.0:
            raise ConfigError(f"budget must be in [0, 1] (got {budget})")
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"v must be in [0, 1] (got {v})")
        self.budget, self.theta0, self.s, self.w, self.v, self.seed = float(budget), float(theta), float(s), int(w), \
            float(v), seed
        self.reset()

    def reset(self) -> None:
        self.theta = self.theta0
        self.u_t = 0.0
        self.rng = np.random.RandomState(self.seed)

    def decide(self, confidence: float) -> bool:
        """Whether to request the item whose top probability is ``confidence``; updates the state."""
        sample = False
        if self.u_t / self.w < self.budget:
            if self.v > 0.0 and self.v > self.rng.random_sample():
                sample = bool(self.rng.random_sample() <= self.budget)
            else:
                sample = bool(confidence < self.theta)
                self.theta *= (1.0 - self.s) if sample else (1.0 + self.s)
        self.u_t = self.u_t * ((self.w - 1) / self.w) + sample
        return sample


class _ZliobaiteStreamPolicy:
    """Request iff the budget state says so (on the raw top probability); else predict the argmax.
    The state restarts whenever the source is at the first item of an episode."""

    v = 0.0
    label = "vu"

    def __init__(self, budget: float, theta: float = 1.0, s: float = 0.01, w: int = 100, seed: int | None = 0) -> None:
        self.state = ZliobaiteBudget(budget, theta=theta, s=s, w=w, v=self.v, seed=seed)
        self.budget = float(budget)
        self.name = f"{self.label}{budget:g}"

    def __call__(self, obs: dict[str, np.ndarray], source: Any) -> int:
        ep = episode_of(source)
        if ep.t == 0:
            self.state.reset()
        p = np.asarray(obs["proba"][: ep.n_classes], dtype=np.float64)
        if self.state.decide(float(p.max())):
            return int(ep.request_action)
        return int(np.argmax(p))


class VariableUncertaintyStreamPolicy(_ZliobaiteStreamPolicy):
    """Variable uncertainty (Zliobaite et al. 2014; scikit-activeml ``VariableUncertainty``)."""

    label = "vu"


class SplitStreamPolicy(_ZliobaiteStreamPolicy):
    """Split (Zliobaite et al. 2014; scikit-activeml ``Split`` with ``v``)."""

    label = "split"

    def __init__(self, budget: float, v: float = 0.1, theta: float = 1.0, s: float = 0.01, w: int = 100,
                 seed: int | None = 0) -> None:
        self.v = float(v)
        super().__init__(budget, theta=theta, s=s, w=w, seed=seed)


def _number(name: str, arg: str) -> float:
    try:
        v = float(arg)
    except ValueError:
        raise ConfigError(f"stream policy {name!r}: {arg!r} is not a number") from None
    if not np.isfinite(v):
        raise ConfigError(f"stream policy {name!r}: {arg!r} is not finite")
    return v


def _plugin(prefix: str) -> Callable[..., Any] | None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == prefix:
            return ep.load()
    return None


def get_stream_policy(name: str, **kwargs: Any) -> Any:
    """A stream policy by name: ``threshold`` (expected-reward threshold), ``threshold:T``,
    ``vu:BUDGET``, ``split:BUDGET``, or ``PREFIX:ARG`` of an installed factory
    (``policy:stream-default``, ``policy:PATH``; keyword arguments go to the factory).

    :raises ConfigError: an unknown name, listing the known ones; a bad number.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"stream policy name must be a non-empty string, got {name!r}")
    base, _, arg = name.partition(":")
    if name == "threshold":
        return ThresholdStreamPolicy()
    if base == "threshold" and arg:
        return ThresholdStreamPolicy(_number(name, arg))
    if base in ("vu", "split") and arg:
        cls = VariableUncertaintyStreamPolicy if base == "vu" else SplitStreamPolicy
        return cls(_number(name, arg))
    if arg:
        factory = _plugin(base)
        if factory is not None:
            return factory(arg, **kwargs)
    raise ConfigError(f"unknown stream policy {name!r} (known: {', '.join(STREAM_POLICY_NAMES)})")
