"""Run many active-learning experiments: datasets x strategies x seeds ("cells").

This is the library side of ``metaal compare`` (and of the agents' evaluation): every cell builds
its strategy fresh with :func:`metaal.strategies.get` inside the worker (so ``policy:PATH`` works
wherever the cell runs), simulates it with :func:`metaal.loop.simulate` and returns a
:class:`~metaal.loop.Curve`. Cells run in-process (``jobs=1``), in joblib processes, or on Ray.
Results are always returned sorted by (dataset, strategy, seed) in the order the caller gave them,
and each cell runs with single-threaded BLAS, so the curves are identical bit for bit whatever
``jobs`` and the backend are.

Typical use::

    from metaal.experiments.runner import run_cells, summarize
    curves = run_cells(["sklearn:wine"], ["random", "margin"], seeds=3, budget=30, initial=6)
    rows = summarize(curves)        # one dict per (dataset, strategy), see SUMMARY_COLUMNS
"""
from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from metaal.data import Dataset, Split, load_dataset, make_split
from metaal.errors import ConfigError, MetaalError
from metaal.learners import LEARNERS
from metaal.loop.simulate import Curve, simulate
from metaal.protocols import check_metric
from metaal.state import Task
from metaal.stopping import DEFAULT_THRESHOLD, DEFAULT_WINDOW, StabilizingPredictions
from metaal.strategies import COLD_FALLBACK, get, names, needs_model, parse_list, reads_truth

BACKENDS = ("joblib", "ray")
CURVE_COLUMNS = ["dataset", "strategy", "seed", "n_labeled", "accuracy", "macro_f1"]
SUMMARY_COLUMNS = [
    "dataset",
    "strategy",
    "aulc_mean",
    "aulc_std",
    "aulc_f1_mean",
    "norm_aulc",
    "final_accuracy",
    "stop_labels_mean",
    "stop_accuracy_mean",
    "stop_fired",
    "mean_rank",
    "query_seconds",
    "cold_picks_mean",
    "guard_picks_mean",
]
RAY_HINT = "pip install metaal[ray]"
MAX_SEEDS = 10_000  # seeds per dataset: every (dataset, seed) task is built before the first cell
MAX_CELLS = 200_000  # datasets x strategies x seeds in one run
# the name a learned policy takes when it cannot load and a heuristic runs instead
_FALLBACK = re.compile(r"^(?P<policy>.+:.*)\(fallback=(?P<heuristic>[A-Za-z0-9_]+)\)$")


@dataclass
class CellJob:
    """One cell, ready to run: a task (pool, test, initial set) and a strategy name.

    :param dataset: position of the dataset in the caller's list (the sort key).
    :param strategy: position of the strategy in the caller's list (the sort key).
    :param seed: the split's seed (seeds the strategy and the learner too).
    :param task_key: key of the :class:`~metaal.state.Task` in the prepared task table.
    """

    dataset: int
    strategy: int
    seed: int
    task_key: tuple[int, int]
    strategy_name: str

    @property
    def sort_key(self) -> tuple[int, int, int]:
        return (self.dataset, self.strategy, self.seed)


# ----------------------------------------------------------------------------------------------
# validation


def check_strategies(strategies: Sequence[str] | str) -> list[str]:
    """Expand (``all``) and validate strategy names before any work starts; every one is also
    instantiated once so that a missing ``policy:PATH`` file fails here, not in a worker.

    A learned policy that cannot be loaded (missing, corrupt, another observation version) falls
    back to its heuristic here, once: its name becomes the strategy's own
    (``policy:PATH(fallback=margin)``), which every output then carries and which the workers build
    as the heuristic directly (:func:`build_strategy`), so the reason is warned once (one
    ``RuntimeWarning``), in the parent, not once per cell or worker.

    :raises ConfigError: for an unknown name or a strategy that cannot be built.
    """
    names = parse_list(strategies if isinstance(strategies, str) else ",".join(strategies))
    out: list[str] = []
    for name in names:
        try:
            if _FALLBACK.match(name):  # already checked (and warned): only its heuristic is built
                build_strategy(name)
                out.append(name)
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                strat = get(name)
        except MetaalError:
            raise
        except ImportError as exc:
            raise ConfigError(f"strategy {name!r} cannot be loaded ({exc})") from None
        error = getattr(strat, "error", None)
        if getattr(strat, "is_fallback", False):
            heuristic = getattr(strat, "fallback_name", "margin")
            name = str(strat.name)
            warnings.warn(f"{error}; running the {heuristic!r} heuristic instead, recorded as {name}",
                          RuntimeWarning, stacklevel=2)
        else:
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if name not in out:
            out.append(name)
    return out


def build_strategy(name: str) -> Any:
    """The strategy of a name that :func:`check_strategies` returned: a fallback name
    (``policy:PATH(fallback=H)``) builds the heuristic ``H`` without touching the policy again."""
    m = _FALLBACK.match(name)
    return get(m.group("heuristic")) if m else get(name)


def resolve_jobs(jobs: int) -> int:
    """``--jobs``: a number of workers >= 1, or -1 for every core (joblib's habit).

    :raises ConfigError: for 0 or another negative number.
    """
    jobs = int(jobs)
    if jobs == -1:
        return max(1, os.cpu_count() or 1)
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, or -1 for all cores (got {jobs})")
    return jobs


def check_size(n_datasets: int, n_strategies: int, seeds: "int | Sequence[int]") -> None:
    """Refuse a run that cannot fit before anything is built (a cheap check on the numbers).

    :raises ConfigError: naming :data:`MAX_SEEDS` or :data:`MAX_CELLS`.
    """
    n_seeds = int(seeds) if isinstance(seeds, (int, np.integer)) else len(seeds)
    if n_seeds > MAX_SEEDS:
        raise ConfigError(f"--seeds {n_seeds} is more than a run can hold (at most {MAX_SEEDS} seeds per dataset)")
    cells = int(n_datasets) * int(n_strategies) * n_seeds
    if cells > MAX_CELLS:
        raise ConfigError(
            f"{n_datasets} dataset(s) x {n_strategies} strategies x {n_seeds} seeds = {cells} cells, "
            f"more than a run can hold (at most {MAX_CELLS}); run it in parts"
        )


def check_cold_fallback(name: str) -> None:
    """The cold-start fallback must be a model-free strategy (``random``, ``coreset``, ...).

    :raises ConfigError: naming it otherwise.
    """
    strat = get(name)
    if needs_model(strat) or reads_truth(strat):
        free = [n for n in names() if not needs_model(get(n)) and not reads_truth(get(n))]
        raise ConfigError(f"--cold-start {name!r} needs a model itself; use a model-free strategy ({', '.join(free)})")


def check_learner(learner: Any) -> None:
    if isinstance(learner, str) and learner not in LEARNERS:
        raise ConfigError(f"unknown learner {learner!r} (known: {', '.join(LEARNERS)})")


def load_datasets(specs: Sequence["str | os.PathLike | Dataset"]) -> list[Dataset]:
    """Load datasets (paths, names along ``METAAL_DATA``, ``sklearn:NAME``) and check that each
    can be used for active learning: numeric features ``X`` present and at least two classes.

    :raises DataError: for a missing, malformed, text-only or single-class dataset.
    :raises ConfigError: when two datasets have the same name (their results would mix).
    """
    if not specs:
        raise ConfigError("no dataset given")
    out: list[Dataset] = []
    for spec in specs:
        ds = load_dataset(spec)
        ds.require_features()
        ds.check_for_learning()
        if any(d.name == ds.name for d in out):
            raise ConfigError(f"two datasets are named {ds.name!r}; rename one file")
        out.append(ds)
    return out


def _seed_list(seeds: "int | Sequence[int]") -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1 (got {seeds})")
        check_size(1, 1, seeds)
        return list(range(int(seeds)))
    out = [int(s) for s in seeds]
    if not out:
        raise ConfigError("no seed given")
    if len(set(out)) != len(out):
        raise ConfigError(f"seeds must be distinct (got {out})")
    return out


def prepare_tasks(
    datasets: Sequence[Dataset],
    seeds: "int | Sequence[int]",
    budget: int,
    initial: int,
    splits: Sequence[Split] | None = None,
) -> dict[tuple[int, int], Any]:
    """Build the :class:`~metaal.state.Task` of every (dataset, seed) and check the budget.

    :param splits: explicit splits (one dataset only); otherwise the default protocol
        :func:`metaal.data.make_split` with ``seed`` and ``initial`` for every seed.
    :returns: ``{(dataset position, seed): Task}``.
    :raises DataError: when the budget exceeds an unlabeled pool or a split is invalid.
    """
    if budget < 1:
        raise ConfigError(f"--budget must be >= 1 (got {budget})")
    tasks: dict[tuple[int, int], Any] = {}
    if splits is not None:
        if len(datasets) != 1:
            raise ConfigError(
                f"--splits works with exactly one dataset (got {len(datasets)}); run one compare per dataset"
            )
        if not splits:
            raise ConfigError("the splits file holds no split")
        seen = [int(s.seed) for s in splits]
        if len(set(seen)) != len(seen):
            raise ConfigError(f"the splits' seeds must be distinct (got {seen})")
        for sp in splits:
            task = Task.from_split(datasets[0], sp)
            task.check_budget(budget)
            tasks[(0, int(sp.seed))] = task
        return tasks
    for d, ds in enumerate(datasets):
        for seed in _seed_list(seeds):
            task = Task.from_split(ds, make_split(ds, seed, initial))
            task.check_budget(budget)
            tasks[(d, seed)] = task
    return tasks


# ----------------------------------------------------------------------------------------------
# one cell


def run_cell(
    task: Any, strategy: str, budget: int, learner: Any = "logreg", batch_size: int = 1,
    stop: tuple[int, float] = (DEFAULT_WINDOW, DEFAULT_THRESHOLD),
    cold_fallback: str = COLD_FALLBACK, metric: str = "accuracy",
) -> Curve:
    """Simulate ``strategy`` (a registry name, built here) on ``task`` with ``budget`` labels;
    ``stop`` is the stopping rule's ``(window, threshold)``, ``cold_fallback`` the model-free
    strategy that picks before two classes are labeled, ``metric`` the headline (the oracle's
    target).

    BLAS runs single-threaded so the curve does not depend on how many cells share the machine.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        strat = build_strategy(strategy)
        curve = simulate(
            task, strat, budget, learner=learner, batch_size=batch_size, seed=int(task.seed),
            stop_window=int(stop[0]), stop_threshold=float(stop[1]), cold_fallback=cold_fallback, metric=metric,
        )
    curve.strategy = strategy  # the name as given (``policy:PATH`` keeps its path)
    curve.dataset = task.name
    return curve


# ----------------------------------------------------------------------------------------------
# backends


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="cells", unit="cell", disable=not enabled, leave=False, dynamic_ncols=True)


def _run_local(
    jobs_: list[CellJob], tasks: dict, budget: int, learner: Any, batch_size: int, jobs: int, progress: bool,
    stop: tuple[int, float] = (DEFAULT_WINDOW, DEFAULT_THRESHOLD), **cell_kw: Any,
) -> list[Curve]:
    out: list[Curve] = []
    with _progress(len(jobs_), progress) as bar:
        if jobs <= 1:
            for j in jobs_:
                out.append(run_cell(tasks[j.task_key], j.strategy_name, budget, learner, batch_size, stop, **cell_kw))
                bar.update(1)
        else:
            from joblib import Parallel, delayed

            par = Parallel(n_jobs=jobs, backend="loky", return_as="generator")
            gen = par(
                delayed(run_cell)(tasks[j.task_key], j.strategy_name, budget, learner, batch_size, stop, **cell_kw)
                for j in jobs_
            )
            for curve in gen:
                out.append(curve)
                bar.update(1)
    return out


def _run_ray(
    jobs_: list[CellJob], tasks: dict, budget: int, learner: Any, batch_size: int, jobs: int, progress: bool,
    stop: tuple[int, float] = (DEFAULT_WINDOW, DEFAULT_THRESHOLD), **cell_kw: Any,
) -> list[Curve]:
    try:
        import ray
        import ray.exceptions
    except ImportError:
        raise MetaalError(f"--backend ray needs Ray, which is not installed: {RAY_HINT}") from None

    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        common = dict(logging_level=logging.WARNING, log_to_driver=False, include_dashboard=False)
        if address:
            ray.init(address=address, **common)
        else:
            ray.init(num_cpus=max(int(jobs), 1), **common)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(run_cell)
        refs_of_task = {key: ray.put(task) for key, task in tasks.items()}
        refs = [
            remote.remote(refs_of_task[j.task_key], j.strategy_name, budget, learner, batch_size, stop, **cell_kw)
            for j in jobs_
        ]
        position = {ref: i for i, ref in enumerate(refs)}
        results: list[Curve | None] = [None] * len(refs)
        pending = list(refs)
        with _progress(len(refs), progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        results[position[ref]] = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, MetaalError):
                            raise cause from None
                        raise
                    bar.update(1)
        return [r for r in results if r is not None]
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------------------------
# the public runner


def run_cells(
    datasets: Sequence["str | os.PathLike | Dataset"],
    strategies: "Sequence[str] | str",
    seeds: "int | Sequence[int]" = 5,
    budget: int = 100,
    initial: int = 10,
    learner: Any = "logreg",
    batch_size: int = 1,
    jobs: int = 1,
    backend: str = "joblib",
    splits: Sequence[Split] | None = None,
    progress: bool = False,
    stop_window: int = DEFAULT_WINDOW,
    stop_threshold: float = DEFAULT_THRESHOLD,
    cold_fallback: str = COLD_FALLBACK,
    metric: str = "accuracy",
) -> list[Curve]:
    """Run every cell dataset x strategy x seed and return the learning curves.

    :param datasets: paths, names along ``METAAL_DATA``, ``sklearn:NAME`` or :class:`Dataset`.
    :param strategies: registry names (``"margin"``, ``"policy:PATH"``) or a comma-separated
        string; ``all`` expands to every registered heuristic.
    :param seeds: a number ``S`` (seeds ``0..S-1``) or explicit seeds; ignored with ``splits``.
    :param budget: labels to acquire after the initial set.
    :param initial: size of the random initial labeled set (default protocol only).
    :param learner: a name in :data:`metaal.learners.LEARNERS` or a scikit-learn estimator.
    :param batch_size: labels per step.
    :param jobs: parallel workers (processes for joblib, CPUs of a local Ray instance).
    :param backend: ``"joblib"`` or ``"ray"`` (``ray.init(num_cpus=jobs)``, or the cluster at
        ``RAY_ADDRESS``).
    :param splits: explicit splits for a single dataset (see :func:`metaal.data.load_splits`).
    :param progress: show a progress bar (stderr).
    :param stop_window: window of the stopping rule recorded on every curve
        (:class:`~metaal.stopping.StabilizingPredictions`; ``Curve.stop_labels``).
    :param stop_threshold: its threshold on the mean kappa.
    :param initial: 0 starts cold: a strategy that needs a model lets ``cold_fallback`` (a
        model-free strategy name) pick until two classes are labeled.
    :param metric: the headline metric (``accuracy`` or ``macro_f1``): what ``oracle`` maximizes.
    :returns: one :class:`~metaal.loop.Curve` per cell, sorted by (dataset, strategy, seed) in
        the given order; identical whatever ``jobs`` and ``backend`` are.
    :raises MetaalError: for any invalid input, before any cell runs.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r} (use {' or '.join(BACKENDS)})")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1 (got {batch_size})")
    jobs = resolve_jobs(jobs)
    StabilizingPredictions(stop_window, stop_threshold)  # raises ConfigError for a bad window/threshold
    check_metric(metric)
    check_cold_fallback(cold_fallback)
    if splits is None:  # the numbers first: a policy loads in a second, a billion seeds never fit
        check_size(len(datasets), 1, seeds)
    names = check_strategies(strategies)
    check_learner(learner)
    if splits is None:
        check_size(len(datasets), len(names), seeds)
    dsets = load_datasets(datasets)
    tasks = prepare_tasks(dsets, seeds, budget, initial, splits)
    jobs_ = [
        CellJob(dataset=d, strategy=s, seed=seed, task_key=(d, seed), strategy_name=name)
        for (d, seed) in tasks
        for s, name in enumerate(names)
    ]
    jobs_.sort(key=lambda j: j.sort_key)
    runner: Callable[..., list[Curve]] = _run_ray if backend == "ray" else _run_local
    stop = (int(stop_window), float(stop_threshold))
    curves = runner(jobs_, tasks, budget, learner, batch_size, jobs, progress, stop,
                    cold_fallback=cold_fallback, metric=metric)
    # the backends keep submission order; sort again so the contract does not depend on that
    ds_pos = {ds.name: d for d, ds in enumerate(dsets)}
    st_pos = {name: s for s, name in enumerate(names)}
    return sorted(curves, key=lambda c: (ds_pos[c.dataset], st_pos[c.strategy], int(c.seed)))


# ----------------------------------------------------------------------------------------------
# metrics


def _ordered_unique(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def headline_aulc(curve: Curve, metric: str = "accuracy") -> float:
    """A curve's AULC in the headline metric: accuracy, or macro-F1 (``metric="macro_f1"``)."""
    return curve.aulc_f1 if metric == "macro_f1" else curve.aulc


def rank_table(curves: Sequence[Curve], metric: str = "accuracy") -> dict[tuple[str, str], list[float]]:
    """Ranks by AULC (in the headline ``metric``) among the strategies of each (dataset, seed),
    1 = best, ties averaged.

    :returns: ``{(dataset, strategy): [rank for each seed]}``.
    """
    from scipy.stats import rankdata

    groups: dict[tuple[str, int], list[Curve]] = {}
    for c in curves:
        groups.setdefault((c.dataset, int(c.seed)), []).append(c)
    ranks: dict[tuple[str, str], list[float]] = {}
    for (ds, _seed), group in groups.items():
        r = rankdata([-headline_aulc(c, metric) for c in group], method="average")
        for c, rk in zip(group, r):
            ranks.setdefault((ds, c.strategy), []).append(float(rk))
    return ranks


def summarize(curves: Sequence[Curve], metric: str = "accuracy") -> list[dict[str, Any]]:
    """One row per (dataset, strategy), in the order of first appearance, with
    :data:`SUMMARY_COLUMNS`: mean and standard deviation (over seeds, ``ddof=0``) of the AULC,
    mean final accuracy (at the budget), the stopping rule's mean labels and mean accuracy at its
    stop over the seeds where it fired (nan where it fired on none) and on how many seeds it fired
    (``stop_fired``), mean rank by AULC among strategies on each dataset/seed (1 = best, ties
    averaged) and mean seconds per query.

    ``aulc_f1_mean`` is the mean AULC of the macro-F1 curve. With ``metric="macro_f1"`` (the
    imbalanced protocol) ranks and ``norm_aulc`` use it instead of accuracy. ``norm_aulc`` =
    (AULC - random's) / (oracle's - random's) of the means on the dataset, where ``random`` and
    ``oracle`` both ran (0 = random, 1 = the oracle; nan otherwise, or when the oracle is not above
    random). ``cold_picks_mean``: items a model-free fallback picked before two classes were
    labeled (the cold start), mean over seeds; ``guard_picks_mean``: picks where a learned
    policy's guard deferred to margin, mean over seeds.
    """
    check_metric(metric)
    ranks = rank_table(curves, metric)
    rows = []
    for ds in _ordered_unique(c.dataset for c in curves):
        for st in _ordered_unique(c.strategy for c in curves if c.dataset == ds):
            cs = [c for c in curves if c.dataset == ds and c.strategy == st]
            aulc = np.array([c.aulc for c in cs])
            fired = [c for c in cs if c.stop_labels is not None]
            rows.append(
                {
                    "dataset": ds,
                    "strategy": st,
                    "aulc_mean": float(aulc.mean()),
                    "aulc_std": float(aulc.std()),
                    "aulc_f1_mean": float(np.mean([c.aulc_f1 for c in cs])),
                    "norm_aulc": float("nan"),
                    "final_accuracy": float(np.mean([c.final_accuracy for c in cs])),
                    "stop_labels_mean": float(np.mean([c.stop_labels for c in fired])) if fired else float("nan"),
                    "stop_accuracy_mean": float(np.mean([c.stop_accuracy for c in fired])) if fired else float("nan"),
                    "stop_fired": len(fired),
                    "mean_rank": float(np.mean(ranks[(ds, st)])),
                    "query_seconds": float(np.mean([c.seconds_per_query for c in cs])),
                    "cold_picks_mean": float(np.mean([c.cold_picks for c in cs])),
                    "guard_picks_mean": float(np.mean([c.guard_picks for c in cs])),
                    "n_seeds": len(cs),
                    "metric": metric,
                }
            )
    key = "aulc_f1_mean" if metric == "macro_f1" else "aulc_mean"
    for ds in {r["dataset"] for r in rows}:
        by = {r["strategy"]: r for r in rows if r["dataset"] == ds}
        if "random" in by and "oracle" in by:
            lo, hi = by["random"][key], by["oracle"][key]
            for r in by.values():
                r["norm_aulc"] = float((r[key] - lo) / (hi - lo)) if hi > lo else float("nan")
    return rows


def norm_aulc_means(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean ``norm_aulc`` per strategy over the datasets where it is defined."""
    out: dict[str, list[float]] = {}
    for r in rows:
        if np.isfinite(r.get("norm_aulc", float("nan"))):
            out.setdefault(str(r["strategy"]), []).append(float(r["norm_aulc"]))
    return {k: float(np.mean(v)) for k, v in out.items()}


def mean_curves(curves: Sequence[Curve]) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Mean and std over seeds of each (dataset, strategy) curve, aligned on ``n_labeled``.

    :returns: ``{(dataset, strategy): {"n_labeled": (T,), "accuracy": (T,), "accuracy_std": (T,),
        "macro_f1": (T,), "macro_f1_std": (T,)}}``; a point averages the seeds that reach it.
    """
    out: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for ds in _ordered_unique(c.dataset for c in curves):
        for st in _ordered_unique(c.strategy for c in curves if c.dataset == ds):
            cs = [c for c in curves if c.dataset == ds and c.strategy == st]
            steps = np.unique(np.concatenate([c.n_labeled for c in cs]))
            acc = {int(n): [] for n in steps}
            f1 = {int(n): [] for n in steps}
            for c in cs:
                for n, a, f in zip(c.n_labeled, c.accuracy, c.macro_f1):
                    acc[int(n)].append(a)
                    f1[int(n)].append(f)
            out[(ds, st)] = {
                "n_labeled": steps,
                "accuracy": np.array([np.mean(acc[int(n)]) for n in steps]),
                "accuracy_std": np.array([np.std(acc[int(n)]) for n in steps]),
                "macro_f1": np.array([np.mean(f1[int(n)]) for n in steps]),
                "macro_f1_std": np.array([np.std(f1[int(n)]) for n in steps]),
            }
    return out
