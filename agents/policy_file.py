"""The portable policy file format: save, load and check a learned query policy.

Policy files
------------
A policy is two files side by side::

    NAME.zip    the Stable-Baselines3 save of the model (``model.save``; MaskablePPO, PPO or DQN
                with the set-equivariant policy of :mod:`metaal.agents.networks`)
    NAME.json   metadata: ``format``, ``obs_version`` (``metaal.observe.OBS_VERSION``), ``k``
                (candidates per step), ``observer`` (Observer arguments), ``algo``, ``datasets``
                (the training datasets), ``config`` (the training configuration), ``metaal_version``,
                ``torch_version``, ``sha256`` (checksum of ``NAME.zip``), ``created``.

The JSON sits beside the zip (not inside it) so that it can be read and checked without touching
the zip, and so that the checksum covers the zip exactly as shipped. ``policy:default`` is the
shipped pair ``metaal/policies/default.zip`` + ``default.json``; ``policy:PATH`` accepts
``PATH.zip``, ``PATH`` without suffix, or a training output folder holding ``policy.zip``.

Any problem (missing file, corrupt zip or JSON, checksum mismatch, other observation version) is a
:class:`~metaal.errors.PolicyError` with a one-line message (:func:`read_metadata`,
:func:`load_model`). :class:`metaal.agents.learned.LearnedStrategy` runs a loaded policy.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import metaal
from metaal.errors import PolicyError
from metaal.observe import OBS_VERSION, OBS_VERSIONS

POLICY_FORMAT = "metaal-policy-1"


def _default_policy_path() -> Path:
    """The shipped default policy (``metaal/policies/default.zip`` inside the installed package)."""
    return Path(metaal.__file__).resolve().parent / "policies" / "default.zip"


#: Names of shipped pool policies by version: ``policy:v1`` is the first shipped ``policy:default``
#: (observation version 1), kept loadable for comparison when a newer default ships.
SHIPPED_ALIASES: dict[str, str] = {"v1": "default"}


def resolve_policy_path(spec: "str | os.PathLike") -> Path:
    """The ``.zip`` that ``spec`` names: ``default``, ``v1`` (:data:`SHIPPED_ALIASES`), the name of
    another shipped policy (``stream-default``), a ``.zip`` path, a path without suffix, or a folder
    holding ``policy.zip`` (a training output)."""
    s = str(spec)
    if s in ("", "default", *SHIPPED_ALIASES):
        return _default_policy_path().with_name(f"{SHIPPED_ALIASES.get(s, 'default')}.zip")
    if "/" not in s and "\\" not in s and not s.endswith(".zip") and not Path(s).exists():
        shipped = _default_policy_path().with_name(f"{s}.zip")
        if shipped.is_file():
            return shipped
    p = Path(s).expanduser()
    if p.is_dir():
        return p / "policy.zip"
    if p.suffix == ".json":
        return p.with_suffix(".zip")
    if p.suffix != ".zip":
        return p.with_suffix(".zip") if not p.exists() else p
    return p


def meta_path(zip_path: "str | os.PathLike") -> Path:
    """The metadata file beside a policy zip: ``NAME.zip`` -> ``NAME.json``."""
    return Path(zip_path).with_suffix(".json")


def sha256_file(path: "str | os.PathLike") -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _normalize_zip(path: Path) -> None:
    """Rewrite the zip at ``path`` with every entry's timestamp set to 1980-01-01 (zip's epoch) and
    its entries in name order, so that the same weights give the same bytes (and the same sha256)
    whenever they are saved; the contents are unchanged."""
    with zipfile.ZipFile(path) as zf:
        entries = [(info, zf.read(info)) for info in sorted(zf.infolist(), key=lambda i: i.filename)]
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as out:
        for info, data in entries:
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = info.compress_type
            fixed.external_attr = info.external_attr
            out.writestr(fixed, data)
    os.replace(tmp, path)


def save_policy(model: Any, path: "str | os.PathLike", k: int, algo: str, datasets: list[str] | None = None,
                config: dict[str, Any] | None = None, observer: dict[str, Any] | None = None,
                extra: dict[str, Any] | None = None, obs_version: str = OBS_VERSION) -> Path:
    """Save an SB3 ``model`` as ``PATH.zip`` plus its metadata ``PATH.json``; returns the zip path.
    ``obs_version``: the observation the policy was trained on (:data:`metaal.observe.OBS_VERSIONS`)."""
    import torch  # heavy: only when saving

    zp = Path(path)
    if zp.suffix != ".zip":
        zp = zp.with_suffix(".zip")
    zp.parent.mkdir(parents=True, exist_ok=True)
    # left out, so that two identical trainings give the same bytes: wall-clock fields (the start
    # time, episode durations in the episode-info buffers) and the schedules, pickled closures whose
    # bytes vary (load_model never unpickles them; SB3 rebuilds them from the saved hyper-parameters)
    model.save(str(zp), exclude=["start_time", "ep_info_buffer", "ep_success_buffer", "lr_schedule", "clip_range",
                                 "clip_range_vf", "exploration_schedule"])
    _normalize_zip(zp)
    meta = {
        "format": POLICY_FORMAT,
        "obs_version": obs_version,
        "k": int(k),
        "observer": observer or {},
        "algo": algo,
        "datasets": list(datasets or []),
        "config": config or {},
        "metaal_version": metaal.__version__,
        "torch_version": torch.__version__,
        "sha256": sha256_file(zp),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        meta.update(extra)
    meta_path(zp).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return zp


def read_metadata(
    zip_path: "str | os.PathLike", obs_version: "str | tuple[str, ...]" = OBS_VERSIONS
) -> dict[str, Any]:
    """Read and check the metadata of a policy zip (existence, JSON, checksum, observation version:
    one of ``obs_version``, the pool observer's versions by default; stream policies pass
    ``stream-2``).

    :raises PolicyError: with a one-line reason.
    """
    zp = Path(zip_path)
    if not zp.is_file():
        raise PolicyError(f"policy file {zp} not found")
    if not zipfile.is_zipfile(zp):  # what is wrong with the zip comes before what is missing beside it
        raise PolicyError(
            f"policy file {zp} is not a zip archive ({zp.stat().st_size} bytes: truncated or corrupt); "
            "download or train it again"
        )
    mp = meta_path(zp)
    if not mp.is_file():
        raise PolicyError(f"policy metadata {mp} not found (a policy is NAME.zip + NAME.json)")
    try:
        meta = json.loads(mp.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError(f"policy metadata {mp} is corrupt ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != POLICY_FORMAT:
        raise PolicyError(f"policy metadata {mp} is not a {POLICY_FORMAT} file")
    for key in ("obs_version", "k", "algo", "sha256"):
        if key not in meta:
            raise PolicyError(f"policy metadata {mp} lacks {key!r}")
    digest = sha256_file(zp)
    if digest != meta["sha256"]:
        raise PolicyError(
            f"policy file {zp} is corrupt: sha256 {digest[:12]}... does not match the metadata's "
            f"{str(meta['sha256'])[:12]}..."
        )
    known = (obs_version,) if isinstance(obs_version, str) else tuple(obs_version)
    if meta["obs_version"] not in known:
        raise PolicyError(
            f"policy {zp} was trained on observation version {meta['obs_version']!r}, this metaal "
            f"computes {' or '.join(repr(v) for v in known)}; retrain it (metaal train)"
        )
    return meta


_ALGOS = ("MaskablePPO", "PPO", "DQN")


def load_model(zip_path: "str | os.PathLike", meta: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Load a checked policy file on the CPU: ``(SB3 model, metadata)``.

    :raises PolicyError: if the files are missing, corrupt or of another observation version.
    """
    meta = read_metadata(zip_path) if meta is None else meta
    algo = meta["algo"]
    if algo not in _ALGOS:
        raise PolicyError(f"policy {zip_path}: unknown algorithm {algo!r} (known: {', '.join(_ALGOS)})")
    # SB3 and torch are heavy: imported only when a policy is loaded
    if algo == "MaskablePPO":
        from sb3_contrib import MaskablePPO as cls
    elif algo == "DQN":
        from metaal.agents.networks import MaskedDQN as cls
    else:
        from stable_baselines3 import PPO as cls
    # schedules are pickled closures; they are not needed to act, so never unpickle them
    custom = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0,
              "exploration_schedule": lambda _: 0.0}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls.load(str(zip_path), device="cpu", custom_objects=custom)
    except Exception as exc:  # a zip that passed the checksum but does not load (other library versions)
        raise PolicyError(f"policy file {zip_path} cannot be loaded ({type(exc).__name__}: {exc})") from None
    model.policy.set_training_mode(False)
    return model, meta
