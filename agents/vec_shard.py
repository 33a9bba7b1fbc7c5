"""``ShardedVecEnv``: one vector environment made of ``W`` vector environments, each in its own process.

SB3's :class:`~stable_baselines3.common.vec_env.SubprocVecEnv` runs one *single* environment per
process; here every worker process runs a whole *vector* environment (typically a
:class:`~metaal.agents.vec_env.BatchedPoolVecEnv` of ``N / W`` episodes on one batched learner),
so a CPU with ``W`` cores steps ``N`` episodes in ``W`` batched problems at once instead of one
(the batched learner is single-threaded on the CPU: one torch thread per worker is fastest).

Index ``i`` of the sharded environment is episode ``i - offset[w]`` of shard ``w``, where shards
hold consecutive blocks (``sizes``). ``seed(s)`` gives shard ``w`` the seed ``s + offset[w]``,
exactly what SB3's ``VecEnv.seed`` gives its environment number ``offset[w]``, so a sharded
environment with one shard behaves like the shard itself.

:func:`make_batched_vec_env` builds the usual case: ``N`` batched Pool-v0 episodes over
``workers`` processes (or in this process when ``workers == 1``).
"""
from __future__ import annotations

import multiprocessing as mp
from typing import Any, Callable, Sequence

import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import CloudpickleWrapper

from metaal.agents.vec_env import BatchedPoolVecEnv
from metaal.errors import ConfigError


class ShardError(RuntimeError):
    """A shard's worker process failed; the message carries its traceback."""


def _answer(venv: VecEnv, cmd: str, data: Any) -> Any:
    """Run one command on a shard's vector environment."""
    if cmd == "step":
        venv.step_async(data)
        return venv.step_wait()
    if cmd == "reset":
        seed, options = data
        if seed is not None:
            venv.seed(seed)
        if options is not None:
            venv.set_options(options)
        return venv.reset(), venv.reset_infos
    if cmd == "action_masks":
        return np.asarray(venv.env_method("action_masks"))
    if cmd == "has_attr":
        return venv.has_attr(data)
    if cmd == "get_attr":
        name, idx = data
        return ("ok", venv.get_attr(name, idx)) if venv.has_attr(name) else ("missing", None)
    if cmd == "set_attr":
        name, value, idx = data
        return venv.set_attr(name, value, idx)
    if cmd == "env_method":
        name, args, kwargs, idx = data
        return venv.env_method(name, *args, indices=idx, **kwargs)
    if cmd == "is_wrapped":
        cls, idx = data
        return venv.env_is_wrapped(cls, idx)
    if cmd == "spaces":
        return venv.num_envs, venv.observation_space, venv.action_space
    raise NotImplementedError(f"unknown command {cmd!r}")


def _worker(remote: Any, parent_remote: Any, fn_wrapper: CloudpickleWrapper) -> None:
    """The loop of one shard process: builds the vector environment, answers ``(ok, payload)``;
    an exception is sent back as ``(False, traceback)`` and the loop goes on."""
    import traceback

    parent_remote.close()
    try:
        venv: VecEnv | None = fn_wrapper.var()
    except Exception:  # noqa: BLE001 -- reported to the parent on its first command
        venv, failure = None, traceback.format_exc()
    try:
        while True:
            cmd, data = remote.recv()
            if cmd == "close":
                if venv is not None:
                    venv.close()
                remote.close()
                break
            if venv is None:
                remote.send((False, failure))
                continue
            try:
                remote.send((True, _answer(venv, cmd, data)))
            except Exception:  # noqa: BLE001
                remote.send((False, traceback.format_exc()))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass


class ShardedVecEnv(VecEnv):
    """``W`` vector environments in ``W`` processes, seen as one vector environment.

    :param venv_fns: one callable per shard that builds its vector environment (closures are
        fine: they travel with cloudpickle). Every shard must have the same observation and
        action spaces.
    :param start_method: ``multiprocessing`` start method; default ``"forkserver"`` where it
        exists (safe with torch's thread pools), else ``"spawn"``.
    """

    def __init__(self, venv_fns: Sequence[Callable[[], VecEnv]], start_method: str | None = None) -> None:
        if not venv_fns:
            raise ConfigError("ShardedVecEnv needs at least one shard")
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(start_method)
        self.remotes, self.processes = [], []
        for fn in venv_fns:
            remote, work_remote = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(work_remote, remote, CloudpickleWrapper(fn)), daemon=True)
            proc.start()
            work_remote.close()
            self.remotes.append(remote)
            self.processes.append(proc)
        self.closed = False
        self.waiting = False
        for r in self.remotes:
            r.send(("spaces", None))
        try:
            answers = [self._recv(w) for w in range(len(self.remotes))]
        except ShardError:
            self.close()
            raise
        self.sizes = [int(a[0]) for a in answers]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)
        obs_space, act_space = answers[0][1], answers[0][2]
        for a in answers[1:]:
            if a[1] != obs_space or a[2] != act_space:
                raise ConfigError("ShardedVecEnv: the shards have different observation or action spaces")
        super().__init__(int(sum(self.sizes)), obs_space, act_space)
        self._last_masks: np.ndarray | None = None

    # -- helpers --------------------------------------------------------------------------------
    def _recv(self, w: int) -> Any:
        """Shard ``w``'s answer; a failure in the shard becomes a :class:`ShardError`."""
        try:
            ok, payload = self.remotes[w].recv()
        except (EOFError, ConnectionResetError) as exc:
            raise ShardError(f"shard {w} of this ShardedVecEnv died (its process exited)") from exc
        if not ok:
            raise ShardError(f"shard {w} of this ShardedVecEnv failed:\n{payload}")
        return payload

    def _split(self, indices: Any) -> list[tuple[int, list[int], list[int]]]:
        """``(shard, local indices, positions in the request)`` for global ``indices``."""
        idx = self._get_indices(indices)
        out: dict[int, tuple[list[int], list[int]]] = {}
        for pos, i in enumerate(idx):
            if not 0 <= i < self.num_envs:
                raise IndexError(f"environment index {i} out of range 0..{self.num_envs - 1}")
            w = int(np.searchsorted(self.offsets, i, side="right") - 1)
            loc, where = out.setdefault(w, ([], []))
            loc.append(int(i - self.offsets[w]))
            where.append(pos)
        return [(w, loc, where) for w, (loc, where) in out.items()]

    def _gather(
        self, cmd: str, make: Callable[[list[int]], Any], indices: Any,
        unwrap: Callable[[Any], list[Any]] | None = None,
    ) -> list[Any]:
        """Send ``(cmd, make(local indices))`` to every shard concerned and put the answers (one
        per local index, after ``unwrap`` when given) back in the order of ``indices``. Every
        answer is read before ``unwrap`` may raise, so no pipe is left holding a stale one."""
        parts = self._split(indices)
        for w, loc, _ in parts:
            self.remotes[w].send((cmd, make(loc)))
        answers = [self._recv(w) for w, _, _ in parts]
        n = sum(len(where) for _, _, where in parts)
        result: list[Any] = [None] * n
        for (_, _, where), answer in zip(parts, answers):
            for pos, value in zip(where, answer if unwrap is None else unwrap(answer)):
                result[pos] = value
        return result

    @staticmethod
    def _concat_obs(obs: list[Any]) -> Any:
        if isinstance(obs[0], dict):
            return {k: np.concatenate([o[k] for o in obs]) for k in obs[0]}
        return np.concatenate(obs)

    def _keep_masks(self, obs: Any) -> None:
        self._last_masks = obs["action_mask"].astype(bool) if isinstance(obs, dict) and "action_mask" in obs else None

    # -- VecEnv API -----------------------------------------------------------------------------
    def reset(self) -> Any:
        for w, remote in enumerate(self.remotes):
            o = int(self.offsets[w])
            opts = self._options[o : o + self.sizes[w]]
            remote.send(("reset", (self._seeds[o], opts if any(opts) else None)))
        answers = [self._recv(w) for w in range(len(self.remotes))]
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [info for _, infos in answers for info in infos]
        obs = self._concat_obs([a[0] for a in answers])
        self._keep_masks(obs)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        for w, remote in enumerate(self.remotes):
            o = int(self.offsets[w])
            remote.send(("step", actions[o : o + self.sizes[w]]))
        self.waiting = True

    def step_wait(self) -> tuple[Any, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        self.waiting = False
        results = [self._recv(w) for w in range(len(self.remotes))]
        obs = self._concat_obs([r[0] for r in results])
        self._keep_masks(obs)
        rewards = np.concatenate([r[1] for r in results])
        dones = np.concatenate([r[2] for r in results])
        infos = [info for r in results for info in r[3]]
        return obs, rewards, dones, infos

    def action_masks(self) -> np.ndarray:
        """Valid actions of every environment ``(N, n_actions)`` bool (kept from the last
        observation when it carries an ``action_mask``, else asked from the shards)."""
        if self._last_masks is not None:
            return self._last_masks.copy()
        for r in self.remotes:
            r.send(("action_masks", None))
        return np.concatenate([self._recv(w) for w in range(len(self.remotes))]).astype(bool)

    def close(self) -> None:
        if self.closed:
            return
        if self.waiting:
            for r in self.remotes:
                try:
                    r.recv()
                except (EOFError, ConnectionResetError):
                    pass
        for r in self.remotes:
            try:
                r.send(("close", None))
            except (BrokenPipeError, EOFError):
                pass
        for p in self.processes:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        self.closed = True

    def has_attr(self, attr_name: str) -> bool:
        if attr_name == "action_masks":
            return True
        # asked in the shards: their values need not travel
        for r in self.remotes:
            r.send(("has_attr", attr_name))
        return all([self._recv(w) for w in range(len(self.remotes))])  # a list: read every answer

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        if attr_name == "action_masks":  # bound methods of a shard do not travel: answer here
            masks = self.action_masks()
            return [(lambda m=masks[i]: m) for i in self._get_indices(indices)]

        def values(answer: tuple[str, Any]) -> list[Any]:
            status, vals = answer
            if status != "ok":
                raise AttributeError(f"the shards of this ShardedVecEnv have no attribute {attr_name!r}")
            return vals

        return self._gather("get_attr", lambda loc: (attr_name, loc), indices, unwrap=values)

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        parts = self._split(indices)
        for w, loc, _ in parts:
            self.remotes[w].send(("set_attr", (attr_name, value, loc)))
        for w, _, _ in parts:
            self._recv(w)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        if method_name == "action_masks":
            masks = self.action_masks()
            return [masks[i] for i in self._get_indices(indices)]
        return self._gather("env_method", lambda loc: (method_name, method_args, method_kwargs, loc), indices)

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return self._gather("is_wrapped", lambda loc: (wrapper_class, loc), indices)


def _shard_sizes(n: int, workers: int) -> list[int]:
    """``n`` episodes over ``workers`` shards, as even as possible (the first ones one larger)."""
    base, extra = divmod(n, workers)
    return [base + (1 if w < extra else 0) for w in range(workers)]


def make_batched_vec_env(
    num_envs: int, workers: int = 1, seed: int | None = None, start_method: str | None = None, **kwargs: Any
) -> VecEnv:
    """``num_envs`` batched Pool-v0 episodes (:class:`~metaal.agents.vec_env.BatchedPoolVecEnv`),
    stepped by ``workers`` processes.

    ``workers == 1`` gives a plain ``BatchedPoolVecEnv`` in this process. With more, shard ``w``
    holds a consecutive block of episodes and the seed ``seed + offset[w]`` (``None`` stays
    ``None``); every other keyword goes to each shard. On a CPU, one worker per core is fastest.
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1 (got {workers})")
    if num_envs < workers:
        raise ConfigError(f"num_envs ({num_envs}) must be >= workers ({workers}): every worker needs an episode")
    if workers == 1:
        return BatchedPoolVecEnv(num_envs=num_envs, seed=seed, **kwargs)
    sizes = _shard_sizes(num_envs, workers)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    def factory(n: int, s: int | None) -> Callable[[], VecEnv]:
        def _make() -> VecEnv:
            return BatchedPoolVecEnv(num_envs=n, seed=s, **kwargs)

        return _make

    fns = [factory(n, None if seed is None else int(seed) + int(o)) for n, o in zip(sizes, offsets)]
    return ShardedVecEnv(fns, start_method=start_method)
