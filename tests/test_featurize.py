"""Featurization: text with the bundled MiniLM model (offline), images with a stand-in TorchScript
encoder, a module:callable encoder and the HOG / PCA baselines, on real shared datasets."""
from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import torch

from metaal.data import Dataset, load_npz
from metaal.errors import ConfigError, DataError
from metaal.featurize import (
    check_texts,
    featurize_dataset,
    featurize_images,
    hog_features,
    load_features_file,
    load_image_folder,
    pca_features,
    subsample,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def cv_accuracy(X: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(cross_val_score(model, X, y, cv=3).mean())


def _usps(shared, n=300):
    return subsample(shared("usps"), n, seed=0)


class TinyCNN(torch.nn.Module):
    """A stand-in image encoder: (B, 1, H, W) -> (B, 64)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(x))).flatten(1)


@pytest.mark.slow
def test_text_minilm_offline_beats_chance(shared, tmp_path, monkeypatch):
    sms = subsample(shared("sms_spam"), 300, seed=0)
    out = featurize_dataset(sms, kind="text", progress=False, batch_size=64)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert out.X.shape == (300, 384) and out.X.dtype == np.float32
    majority = np.bincount(sms.y).max() / sms.n
    acc = cv_accuracy(out.X, sms.y)
    assert acc > majority + 0.04, (acc, majority)
    # the .npz carries the text and reads back with load_npz
    path = out.save(tmp_path / "sms_feats.npz")
    back = load_npz(path)
    assert back.X.shape == (300, 384) and back.text is not None and back.text[0] == sms.text[0]
    assert list(back.classes) == ["ham", "spam"] and "source_row" in back.extras


def test_empty_text_and_missing_model_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="empty document.*row 1"):
        check_texts(["hello", "   ", "x"])
    ds = Dataset(X=None, y=np.array([0, 1]), classes=["a", "b"], text=np.array(["fine", ""]))
    with pytest.raises(DataError, match="empty document"):
        featurize_dataset(ds, kind="text", progress=False)
    ok = Dataset(X=None, y=np.array([0, 1]), classes=["a", "b"], text=np.array(["fine", "good"]))
    with pytest.raises(ConfigError, match="never downloads"):
        featurize_dataset(ok, kind="text", model=str(tmp_path / "nope"), progress=False)


def test_torchscript_encoder_on_usps(shared, tmp_path):
    usps = _usps(shared)
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(TinyCNN()), str(path))
    X = featurize_images(usps.images, model=str(path), batch_size=50, progress=False)
    assert X.shape == (300, 64) and X.dtype == np.float32
    # the same module used directly gives the same features (batched == unbatched)
    with torch.no_grad():
        ref = TinyCNN()(torch.from_numpy(usps.images[:5].astype(np.float32)[:, None] / 255.0)).numpy()
    np.testing.assert_allclose(X[:5], ref, rtol=1e-5, atol=1e-6)
    acc = cv_accuracy(X, usps.y)
    assert acc > 0.3, acc  # 10 classes: chance is 0.1


def test_module_callable_encoder_and_bad_specs(shared, tmp_path, monkeypatch):
    usps = _usps(shared, 60)
    (tmp_path / "my_encoder.py").write_text(
        "import torch\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    X = featurize_images(usps.images, model="my_encoder:build", progress=False)
    assert X.shape == (60, 4) and np.isfinite(X).all() and X.std(0).min() > 0
    with pytest.raises(ConfigError, match="pip install metaal\\[vision\\]"):
        featurize_images(usps.images, model="resnet18")
    with pytest.raises(ConfigError, match="unknown image model"):
        featurize_images(usps.images, model="nosuchmodel")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torchscript")
    with pytest.raises(ConfigError, match="TorchScript"):
        featurize_images(usps.images, model=str(bad))


def test_hog_and_pca_baselines_on_usps(shared):
    usps = _usps(shared)
    H = hog_features(usps.images, progress=False)
    # 16x16 images, 4x4 cells, 2x2 blocks: 3x3 blocks x 4 cells x 9 bins
    assert H.shape == (300, 324) and np.isfinite(H).all()
    P = pca_features(usps.images, n_components=30)
    assert P.shape == (300, 30)
    assert cv_accuracy(H, usps.y) > 0.75
    assert cv_accuracy(P, usps.y) > 0.7
    # HOG is invariant to contrast (blocks are normalized)
    f = usps.images[:10].astype(np.float32) / 255.0
    np.testing.assert_allclose(hog_features(0.5 * f, progress=False), H[:10], atol=1e-4)


def test_image_folder_decoding_errors(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(np.full((8, 10, 3), 40 * i + (c == "dog") * 100, np.uint8)).save(tmp_path / c / f"{i}.png")
    ds = load_image_folder(tmp_path)
    assert ds.images.shape == (4, 8, 10, 3) and list(ds.classes) == ["cat", "dog"] and list(ds.y) == [0, 0, 1, 1]
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="broken.png: cannot decode"):
        load_image_folder(tmp_path)


def test_features_file_row_count_must_match(tmp_path, wine):
    np.save(tmp_path / "f.npy", np.zeros((5, 3), np.float32))
    with pytest.raises(DataError, match="5 rows but there are 178 items"):
        load_features_file(tmp_path / "f.npy", wine.n)
    ds = Dataset(X=None, y=wine.y, classes=wine.classes, text=np.array(["t"] * wine.n))
    with pytest.raises(DataError, match="row counts must match"):
        featurize_dataset(ds, kind="text", features=tmp_path / "f.npy")
    np.save(tmp_path / "g.npy", wine.X)
    out = featurize_dataset(ds, kind="text", features=tmp_path / "g.npy")
    assert out.X.shape == wine.X.shape and out.text is not None


def test_featurize_command_hog(shared, tmp_path):
    shared("usps")
    from metaal import featurize_cli

    parser = argparse.ArgumentParser()
    featurize_cli.register(parser.add_subparsers())
    out = tmp_path / "usps_hog.npz"
    args = parser.parse_args(
        ["featurize", "--data", "usps", "--kind", "image", "--limit", "200", "--no-progress", "--out", str(out)]
    )
    assert args.func(args) == 0
    back = load_npz(out)
    assert back.X.shape == (200, 324) and back.images.shape == (200, 16, 16) and back.n_classes == 10
    assert "is_test" in back.extras  # extra arrays ride along
