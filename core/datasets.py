"""Datasets: load a spec's data, split it, standardize it and encode its targets for the loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.dataset_spec import GENERATORS, Inline, Shipped, Uploaded, n_fit_rows
from core.losses import LOSSES
from core.models import Dataset
from core.spec import JobSpec
from core.uploads import load_arrays

Arrays = tuple[NDArray, NDArray]


@dataclass
class PreparedData:
    """Split, scaled and encoded arrays; features are float32, targets encoded for the loss."""

    task: str
    n_features: int
    classes: list[Any]
    X_fit: NDArray
    T_fit: NDArray
    X_val: NDArray | None
    T_val: NDArray | None
    X_test: NDArray
    T_test: NDArray
    scaler_mean: NDArray | None = None
    scaler_scale: NDArray | None = None


def as_float32(x: NDArray) -> NDArray:
    return np.ascontiguousarray(x, dtype=np.float32)


# The generators a spec may name; their parameters are validated in the spec.


def _generator(name: str) -> Callable[..., tuple[NDArray, NDArray]]:
    from sklearn import datasets  # imported here: only workers load data

    if name not in GENERATORS:
        raise ValueError(f"unknown dataset generator {name!r}")
    generator: Callable[..., tuple[NDArray, NDArray]] = getattr(datasets, name)
    return generator


def _shipped(name: str) -> tuple[NDArray, NDArray]:
    from sklearn import datasets

    loaded = getattr(datasets, f"load_{name}")(return_X_y=True)
    return loaded[0], loaded[1]


def uploaded_arrays(session: Session, tenant_id: str, spec: JobSpec) -> Arrays | None:
    """The stored arrays of the spec's uploaded dataset (None when it names no upload)."""
    if not isinstance(spec.dataset, Uploaded):
        return None
    data = session.scalar(
        select(Dataset.data).where(
            Dataset.id == spec.dataset.dataset_id, Dataset.tenant_id == tenant_id
        )
    )
    if data is None:
        raise ValueError(f"dataset {spec.dataset.dataset_id!r} no longer exists")
    return load_arrays(data)


def load_raw(spec: JobSpec, uploaded: Arrays | None = None) -> Arrays:
    """The dataset's features (float64) and raw targets, before any split."""
    dataset = spec.dataset
    if isinstance(dataset, Inline):
        X = np.asarray(dataset.inline.X, dtype=np.float64)
        y = np.asarray(dataset.inline.y)
        return X, y
    if isinstance(dataset, Uploaded):
        if uploaded is None:
            raise ValueError("an uploaded dataset's arrays must be loaded first")
        return uploaded
    if isinstance(dataset, Shipped):
        return _shipped(dataset.builtin)
    params = dataset.params.model_dump()
    if params.get("random_state") is None:
        # A spec with a seed means the same data every time: default the generator's seed to it.
        params["random_state"] = spec.seed
    X, y = _generator(dataset.builtin)(**params)
    return np.asarray(X, dtype=np.float64), np.asarray(y)


def encode_targets(y: NDArray, classes: NDArray | None, loss: str) -> NDArray:
    """Targets in the form the loss wants: class indices, one-hot rows, or float columns."""
    entry = LOSSES.get(loss)
    if classes is None:
        return entry.encode(y, 0)
    return entry.encode(np.searchsorted(classes, y), len(classes))


def _label_values(classes: NDArray) -> list[Any]:
    return [c.item() if hasattr(c, "item") else c for c in classes]


def prepare(spec: JobSpec, uploaded: Arrays | None = None) -> PreparedData:
    """Load, split (test, then Keras's trailing validation fraction), scale and encode."""
    from sklearn.model_selection import train_test_split

    X, y = load_raw(spec, uploaded)
    classes: NDArray | None = None
    if spec.task == "classification":
        if y.dtype.kind == "f":
            y = y.astype(np.int64)
        classes = np.unique(y)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=spec.split.test_size, random_state=spec.seed
    )
    n_fit = n_fit_rows(len(X_train), spec.split.validation_split)
    X_fit, y_fit = X_train[:n_fit], y_train[:n_fit]
    X_val, y_val = X_train[n_fit:], y_train[n_fit:]
    mean = scale = None
    if spec.preprocessing.standardize:
        # Fitted on the rows trained on only: validation and test rows never leak into it.
        mean = X_fit.mean(axis=0)
        std = X_fit.std(axis=0)
        scale = np.where(std > 0, std, 1.0)

    def features(part: NDArray) -> NDArray:
        return as_float32(part if mean is None else (part - mean) / scale)

    has_val = len(X_val) > 0
    return PreparedData(
        task=spec.task,
        n_features=X.shape[1],
        classes=_label_values(classes) if classes is not None else [],
        X_fit=features(X_fit),
        T_fit=encode_targets(y_fit, classes, spec.loss),
        X_val=features(X_val) if has_val else None,
        T_val=encode_targets(y_val, classes, spec.loss) if has_val else None,
        X_test=features(X_test),
        T_test=encode_targets(y_test, classes, spec.loss),
        scaler_mean=mean,
        scaler_scale=scale,
    )
