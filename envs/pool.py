"""``metaal/Pool-v0``: pool-based active learning as an MDP, one label per step.

Each episode (``reset``) draws a dataset from the collection, a pool/test split, a reward split
carved out of the pool, an initial labeled set and a budget, all from the environment's
``np_random``. A step labels one of the ``K`` candidates offered by
:class:`metaal.observe.Observer` (margin's best pick is always candidate 0), refits the learner
through :meth:`ALState.add_labels`, and rewards the step on the reward split
(:mod:`metaal.envs.rewards`). Test accuracy is reported in ``info`` only.

The environment holds a :class:`~metaal.state.Task` and an :class:`~metaal.state.ALState` built
with :func:`metaal.loop.new_state`, and evaluates with :func:`metaal.loop.evaluate`, so a policy that
always takes candidate 0 reproduces :func:`metaal.loop.simulate` with ``margin`` exactly.
"""
from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from metaal.envs._threads import blas_limit
from metaal.envs.collection import DatasetCollection, RenderModeError, carve_reward_split, sample_task
from metaal.envs.rewards import RewardSplit, check_mode, headroom, step_reward
from metaal.errors import ConfigError, DataError
from metaal.learners import Learner, make_learner
from metaal.loop.simulate import evaluate, label_step, new_state
from metaal.observe import CANDIDATE_HIGH, GLOBAL_HIGH, N_CANDIDATE_FEATURES, N_GLOBAL_FEATURES, Observation, Observer
from metaal.state import ALState, Task


def pool_spaces(k: int) -> tuple[spaces.Dict, spaces.Discrete]:
    """The observation and action spaces of ``metaal/Pool-v0`` with ``K = k`` candidates."""
    obs = spaces.Dict(
        {
            "candidates": spaces.Box(
                low=0.0, high=np.tile(CANDIDATE_HIGH, (k, 1)), shape=(k, N_CANDIDATE_FEATURES), dtype=np.float32
            ),
            "global": spaces.Box(low=0.0, high=GLOBAL_HIGH, shape=(N_GLOBAL_FEATURES,), dtype=np.float32),
            "action_mask": spaces.MultiBinary(k),
        }
    )
    return obs, spaces.Discrete(k)


def budget_spec(budget: "int | Sequence[int]") -> tuple[int, int]:
    if isinstance(budget, (int, np.integer)):
        lo = hi = int(budget)
    else:
        try:
            lo, hi = (int(b) for b in budget)
        except (TypeError, ValueError):
            raise ConfigError(f"budget must be an int or a (low, high) pair, got {budget!r}") from None
    if lo < 1 or hi < lo:
        raise ConfigError(f"budget must be >= 1 with low <= high, got {budget!r}")
    return lo, hi


class PoolEnvBase(gym.Env):
    """Shared machinery of the pool-based environments (episode sampling, state, rewards, info).

    :param datasets: a dataset collection (:class:`~metaal.envs.collection.DatasetCollection`);
        default: scikit-learn's bundled sets and synthetic tasks (no ``METAAL_DATA`` needed).
    :param budget: labels per episode, an int or a ``(low, high)`` range sampled per episode
        (clipped to the unlabeled pool).
    :param initial: size of the random initial labeled set (at least two classes), or 0 for a cold
        start (the agent picks from the first label; the observation has no model yet).
    :param k: candidates per step ``K``.
    :param learner: learner name (``logreg``, ``svm``, ...) or scikit-learn estimator.
    :param reward: ``margin_gain`` (default), ``acc_gain`` or ``label_cost``.
    :param reward_frac: fraction of the pool held out as the reward split (0: none, every reward 0).
    :param reward_cap: at most this many reward-split rows.
    :param max_pool: subsample larger pools to this many rows (None: never).
    :param target_accuracy: ``label_cost``'s target reward-split accuracy; None: 98% of the
        accuracy of a model trained on the whole pool.
    :param warm_start: warm-start the learner from its previous solution (faster refits; the
        counterfactual fit of ``margin_gain`` then starts from the current solution too).
    :param macro_f1: also report ``info["test_macro_f1"]`` (via :func:`metaal.loop.evaluate`;
        costs a few ms per step). Test accuracy is reported either way, computed the same way.
    :param blas_threads: BLAS threads during reset/step (default 1: small fits are fastest
        single-threaded, and 10-20x faster on a loaded machine; None: leave the libraries alone).
    :param render_mode: None or ``"ansi"``.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}
    #: how :class:`metaal.envs.policies.HeuristicPolicy` turns a heuristic's pick into an action
    action_kind = "candidate"

    def __init__(
        self,
        datasets: Any = None,
        budget: "int | Sequence[int]" = 50,
        initial: int = 10,
        k: int = 32,
        learner: Any = "logreg",
        reward: str = "margin_gain",
        reward_frac: float = 0.25,
        reward_cap: int = 500,
        max_pool: int | None = 2000,
        target_accuracy: float | None = None,
        warm_start: bool = False,
        macro_f1: bool = False,
        blas_threads: int | None = 1,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        self.collection = datasets if isinstance(datasets, DatasetCollection) else DatasetCollection(datasets)
        self.budget_range = budget_spec(budget)
        if initial != 0 and initial < 2:
            raise ConfigError(f"initial must be 0 (cold start) or >= 2 (got {initial})")
        if not 0 <= reward_frac < 1:
            raise ConfigError(f"reward_frac must be in [0, 1) (got {reward_frac})")
        if max_pool is not None and max_pool < initial + 2:
            raise ConfigError(f"max_pool must exceed the initial set (got {max_pool})")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise RenderModeError(f"render_mode must be None or 'ansi' (got {render_mode!r})")
        if target_accuracy is not None and not 0 < target_accuracy <= 1:
            raise ConfigError(f"target_accuracy must be in (0, 1] (got {target_accuracy})")
        self.initial = int(initial)
        self.k = int(k)
        self.learner_spec = learner
        self.reward_mode = check_mode(reward)
        self.reward_frac = float(reward_frac)
        self.reward_cap = int(reward_cap)
        self.max_pool = max_pool
        self.target_accuracy_opt = target_accuracy
        self.warm_start = bool(warm_start)
        self.macro_f1 = bool(macro_f1)
        self.blas_threads = blas_threads
        self.render_mode = render_mode
        self.observer = Observer(k=self.k)
        # filled by reset()
        self.task: Task | None = None
        self.state: ALState | None = None
        self.reward_split: RewardSplit | None = None
        self.last_observation: Observation | None = None
        self.budget = 0
        self.headroom = 1.0
        self.full_accuracy = float("nan")
        self.target_accuracy = float("nan")
        self.reward_accuracy = float("nan")
        self.test_accuracy = float("nan")
        self.test_macro_f1 = float("nan")
        self.last_reward = 0.0

    # -- gymnasium API (subclasses implement _first_observation and _step) ------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode. ``options``: ``task`` (pin a :class:`Task`; the reward split is carved
        out of its pool unless ``reward_frac == 0``), ``budget`` (int or range), ``dataset`` (pin
        a dataset; the split is drawn as usual)."""
        with blas_limit(self.blas_threads):
            super().reset(seed=seed)
            self._setup(options)
            return self._first_observation()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self.state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        with blas_limit(self.blas_threads):
            return self._step(action)

    def _first_observation(self) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def _step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        raise NotImplementedError

    # -- episode setup ---------------------------------------------------------------------------
    def _learner(self, n_classes: int) -> Learner:
        return make_learner(self.learner_spec, n_classes, seed=0, warm_start=self.warm_start)

    def _setup(self, options: dict[str, Any] | None) -> None:
        options = dict(options or {})
        unknown = set(options) - {"task", "budget", "dataset"}
        if unknown:
            raise ConfigError(f"unknown reset option(s) {sorted(unknown)} (known: task, budget, dataset)")
        rng = self.np_random
        if options.get("task") is not None:
            task = options["task"]
            if not isinstance(task, Task):
                raise ConfigError(f"options['task'] must be a metaal.state.Task, got {type(task).__name__}")
            task, split = carve_reward_split(task, rng, self.reward_frac, self.reward_cap)
        else:
            if options.get("dataset") is not None:
                ds = DatasetCollection(options["dataset"]).get(0, rng)
            else:
                ds = self.collection.sample(rng)
            task, split = sample_task(
                ds, rng, self.initial, self.max_pool, self.reward_frac, self.reward_cap
            )
        if options.get("budget") is not None:
            lo, hi = budget_spec(options["budget"])
        else:
            lo, hi = self.budget_range
        budget = lo if lo == hi else int(rng.integers(lo, hi + 1))
        free = task.n_pool - len(task.initial)
        if free < 1:
            raise DataError(f"{task.name}: no unlabeled pool items left after the initial set")
        self.budget = min(budget, free)
        self.task, self.reward_split = task, split
        self.state = new_state(task, self._learner(task.n_classes), budget=self.budget, seed=task.seed)
        self.reward_accuracy = split.accuracy(self.state.learner)
        self.headroom, self.full_accuracy = 1.0, float("nan")
        if self.reward_mode == "margin_gain" or (
            self.reward_mode == "label_cost" and self.target_accuracy_opt is None
        ):
            self.headroom, self.full_accuracy = headroom(
                task.X_pool, task.y_pool, self.state.learner, split, self.reward_accuracy
            )
        self.target_accuracy = (
            self.target_accuracy_opt if self.target_accuracy_opt is not None else 0.98 * self.full_accuracy
        )
        self._evaluate()
        self.last_reward = 0.0

    def _evaluate(self) -> None:
        """Test accuracy (and macro-F1 when asked) of the current model; reported, never rewarded."""
        assert self.state is not None and self.task is not None
        self.test_accuracy, self.test_macro_f1 = evaluate(
            self.state.learner, self.task.X_test, self.task.y_test, macro_f1=self.macro_f1
        )

    def _observe(self) -> Observation:
        assert self.state is not None
        self.last_observation = self.observer.observe(self.state, self.np_random)
        return self.last_observation

    def _info(self, pool_index: int = -1, margin_index: int = -1, invalid: bool = False) -> dict[str, Any]:
        assert self.state is not None and self.task is not None
        info = {
            "test_accuracy": self.test_accuracy,
            "reward_accuracy": self.reward_accuracy,
            "n_labeled": self.state.n_labeled,
            "pool_index": int(pool_index),
            "margin_index": int(margin_index),
            "invalid_action": bool(invalid),
            "dataset": self.task.name,
            "budget": self.budget,
        }
        if self.macro_f1:
            info["test_macro_f1"] = self.test_macro_f1
        return info

    def _label(self, idx: np.ndarray, margin_idx: np.ndarray) -> tuple[float, bool]:
        """Label pool positions ``idx`` (b,) with the oracle, refit, score the step against margin's
        picks ``margin_idx`` (b,). Returns ``(reward, terminated)``."""
        assert self.state is not None and self.task is not None and self.reward_split is not None
        task, state = self.task, self.state
        prev = self.reward_accuracy
        self.test_accuracy, self.test_macro_f1 = label_step(
            state, idx, task.y_pool[idx], task.X_test, task.y_test, macro_f1=self.macro_f1
        )
        sr = step_reward(
            self.reward_mode, state, self.reward_split, idx, margin_idx, task.y_pool[margin_idx],
            prev, self.headroom, self.target_accuracy,
        )
        self.reward_accuracy = sr.accuracy
        self.last_reward = sr.reward
        terminated = (
            state.n_queried >= self.budget or len(state.unlabeled_idx) == 0 or sr.reached_target
        )
        return float(sr.reward), bool(terminated)

    def action_masks(self) -> np.ndarray:
        """Valid candidates ``(K,)`` bool (for sb3-contrib's MaskablePPO)."""
        if self.last_observation is None:
            return np.ones(self.k, dtype=bool)
        return self.last_observation.mask.copy()

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self.state is None or self.task is None:
            return None
        return (
            f"{self.task.name}: {self.state.n_labeled} labeled ({self.state.n_queried}/{self.budget} queried), "
            f"test acc {self.test_accuracy:.3f}, reward acc {self.reward_accuracy:.3f}, "
            f"last reward {self.last_reward:+.4f}\n"
        )


class PoolEnv(PoolEnvBase):
    """``metaal/Pool-v0``: one label per step, chosen among ``K`` candidates.

    * observation: ``Dict(candidates=Box(0, high, (K, F)), global=Box(0, high, (G,)),
      action_mask=MultiBinary(K))`` (:mod:`metaal.observe`);
    * action: ``Discrete(K)``, the candidate to label; a masked, padding or out-of-range action
      labels margin's pick (candidate 0) instead and sets ``info["invalid_action"]``;
    * info: ``test_accuracy``, ``reward_accuracy``, ``n_labeled``, ``pool_index`` (the labeled pool
      position), ``margin_index`` (margin's pick), ``invalid_action``, ``dataset``, ``budget``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.observation_space, self.action_space = pool_spaces(self.k)

    def _first_observation(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        ob = self._observe()
        return ob.as_dict(), self._info()

    def _step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        ob = self.last_observation
        assert ob is not None
        try:
            a = int(np.asarray(action).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            a = -1
        invalid = not (0 <= a < self.k and bool(ob.mask[a]))
        if invalid:
            a = 0
        pool_idx = np.array([ob.indices[a]])
        margin_idx = np.array([ob.indices[0]])
        reward, terminated = self._label(pool_idx, margin_idx)
        new = self._observe()
        info = self._info(int(pool_idx[0]), int(margin_idx[0]), invalid)
        return new.as_dict(), reward, terminated, False, info
