#!/usr/bin/env python
"""Environment steps per second of ``metaal/Pool-v0`` against a naive environment.

The dataset is the shared ``waveform`` (5,000 rows; found along ``METAAL_DATA``), with
``max_pool=3500`` so that the whole 70% pool is kept (3,500 rows; 500 of them become the reward
split, 3,000 remain queryable). Both environments run the same MDP with the default
``margin_gain`` reward (one counterfactual fit per step that does not take margin's pick) on the
same task, driven by the same random valid actions:

* ``Pool-v0`` with ``warm_start=True``: cached pool probabilities, incremental distances to the
  labeled set, density and distance scale computed once per episode, warm-started logistic
  regression;
* ``NaiveEnv`` (below): every step refits scikit-learn from scratch and recomputes every feature
  from scratch (a fresh :class:`ALState` per step, so distances to the labeled set, the density,
  the distance scale and the learner are rebuilt each time).

It also checks that warm starting does not change the learning curves beyond noise (margin
policy, warm vs. cold learner, a few seeds).

    METAAL_DATA=../shared/data python scripts/bench_env.py [--steps 100] [--dataset waveform]

Vector environments (1 to 256 parallel episodes, scikit-learn envs in DummyVecEnv / SubprocVecEnv
against the batched torch env in one or several processes, CPU or GPU) are measured by
``scripts/bench_vec.py``.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def naive_env_class():  # imports inside: the script stays importable without the data
    from metaal.envs import PoolEnv
    from metaal.envs.rewards import counterfactual_accuracy
    from metaal.learners import make_learner
    from metaal.state import ALState

    class NaiveEnv(PoolEnv):
        """Pool-v0's MDP without any caching: rebuilds the state and refits from scratch each step."""

        def _fresh_state(self) -> ALState:
            old = self.state
            st = ALState(
                old.X_pool, old.n_classes, make_learner("logreg", old.n_classes), budget=old.budget, classes=old.classes
            )
            lab = np.asarray(old.order, dtype=np.int64)
            st.add_labels(lab, old.labels[lab], refit=True, record=False)  # fit from scratch
            st.n_initial = old.n_initial
            st.history = list(old.history)
            st.prev_proba, st.prev_pred = old.proba, old.pred  # the model before this step
            return st

        def step(self, action):
            ob = self.last_observation
            a = int(action)
            if not (0 <= a < self.k and ob.mask[a]):
                a = 0
            idx = np.array([ob.indices[a]])
            m = np.array([ob.indices[0]])
            task = self.task
            self.state.labels[idx] = task.y_pool[idx]
            self.state.labeled_mask[idx] = True
            self.state.order.extend(int(i) for i in idx)
            self.state.history.append(idx)
            self.state = self._fresh_state()  # fresh learner fit, no cached geometry
            acc = self.reward_split.accuracy(self.state.learner)
            if idx[0] == m[0]:
                reward = 0.0
            else:
                reward = (
                    acc - counterfactual_accuracy(self.state, self.reward_split, idx, m, task.y_pool[m])
                ) / self.headroom
            self.reward_accuracy = acc
            self._evaluate()
            new = self._observe()  # density, distance scale, min distances all recomputed
            done = self.state.n_queried >= self.budget
            return new.as_dict(), reward, done, False, self._info(int(idx[0]), int(m[0]))

    return NaiveEnv


def run(env, task, budget: int, seed: int) -> tuple[float, float, int, list[float]]:
    """Wall and CPU seconds of the steps of one episode of random valid actions (reset excluded),
    the steps taken and the rewards."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed, options={"task": task, "budget": budget})
    t0, c0 = time.perf_counter(), time.process_time()
    steps, rewards, done = 0, [], False
    while not done:
        valid = np.flatnonzero(obs["action_mask"])
        obs, r, done, _, info = env.step(int(rng.choice(valid)))
        rewards.append(r)
        steps += 1
    return time.perf_counter() - t0, time.process_time() - c0, steps, rewards


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="waveform")
    ap.add_argument("--steps", type=int, default=100, help="labels per episode")
    ap.add_argument("--max-pool", type=int, default=3500)
    ap.add_argument("--curve-seeds", type=int, default=3)
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="BLAS threads for both envs (small fits are fastest single-threaded; 0: library default)")
    args = ap.parse_args(argv)
    if args.blas_threads > 0:
        import scipy.optimize  # noqa: F401  (load every BLAS first: threadpoolctl limits loaded ones)
        import sklearn.linear_model  # noqa: F401
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads)

    from metaal.data import load_dataset
    from metaal.envs import PoolEnv, sample_task
    from metaal.envs.policies import HeuristicPolicy, evaluate_policy
    from metaal.errors import MetaalError

    try:
        ds = load_dataset(args.dataset)
    except MetaalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # one task for both (reward_frac=0 in sample_task's caller below: the env carves the reward split)
    task, _ = sample_task(ds, np.random.default_rng(0), initial=10, max_pool=args.max_pool, reward_frac=0.0)
    print(f"dataset {ds.name}: {ds.n} rows, pool {task.n_pool} (reward split 500 carved by the env), "
          f"test {len(task.y_test)}, {args.steps} steps per episode")
    fast = PoolEnv(warm_start=True, max_pool=args.max_pool)
    naive = naive_env_class()(max_pool=args.max_pool)
    t_fast, c_fast, n_fast, r_fast = run(fast, task, args.steps, seed=0)
    t_naive, c_naive, n_naive, r_naive = run(naive, task, args.steps, seed=0)
    t_cold, c_cold, n_cold, _ = run(PoolEnv(warm_start=False, max_pool=args.max_pool), task, args.steps, seed=0)
    print(f"{'env':<26}{'steps':>6}{'wall s':>8}{'steps/s':>9}{'CPU s':>8}{'steps/CPU-s':>13}")
    for name, t, c, n in (
        ("Pool-v0 (warm, cached)", t_fast, c_fast, n_fast),
        ("Pool-v0 (cold, cached)", t_cold, c_cold, n_cold),
        ("naive (from scratch)", t_naive, c_naive, n_naive),
    ):
        print(f"{name:<26}{n:>6}{t:>8.2f}{n / t:>9.1f}{c:>8.2f}{n / c:>13.1f}")
    print(f"speed-up: {(n_fast / t_fast) / (n_naive / t_naive):.1f}x wall-clock, "
          f"{(n_fast / c_fast) / (n_naive / c_naive):.1f}x CPU time")
    print(
        f"mean reward: Pool-v0 {np.mean(r_fast):+.4f}, naive {np.mean(r_naive):+.4f} (same MDP and action "
        "indices; warm and cold fits differ slightly, so the trajectories part)"
    )

    # warm start vs cold: (1) the same labeled sets give the same test accuracies up to the
    # solver's tolerance; (2) margin's AULC over seeds agrees within the seed-to-seed noise
    # (trajectories may part once a near-tie in margins flips).
    from metaal.learners import make_learner
    from metaal.loop.simulate import new_state

    same, aulc = [], {False: [], True: []}
    for s in range(args.curve_seeds):
        t, _ = sample_task(ds, np.random.default_rng(100 + s), initial=10, max_pool=args.max_pool, reward_frac=0.0)
        queried = None
        for warm in (False, True):
            env = PoolEnv(warm_start=warm, reward_frac=0.0, max_pool=args.max_pool)
            c = evaluate_policy(env, HeuristicPolicy("margin"), 1, seed=s, options={"task": t, "budget": args.steps})[0]
            aulc[warm].append(c.aulc)
            if not warm:
                queried, cold_curve = c.queried, c.accuracy
        st = new_state(t, make_learner("logreg", t.n_classes, warm_start=True), budget=args.steps)
        accs = [np.mean(st.learner.predict(t.X_test) == t.y_test)]
        for i in queried:
            st.add_labels([i], [t.y_pool[i]])
            accs.append(np.mean(st.learner.predict(t.X_test) == t.y_test))
        same.append(np.max(np.abs(np.asarray(accs) - cold_curve)))
    if args.curve_seeds:
        print(f"\nwarm start vs cold ({args.curve_seeds} seeds, {args.steps} labels, margin):")
        print(f"  same labeled sets: max |test accuracy difference| per seed {', '.join(f'{d:.4f}' for d in same)}")
        for warm in (False, True):
            a = np.asarray(aulc[warm])
            print(
                f"  {'warm' if warm else 'cold'} AULC {a.mean():.4f} +- {a.std():.4f}  "
                f"({', '.join(f'{x:.4f}' for x in a)})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
