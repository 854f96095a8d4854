"""The three packages keep their shape: what each side loads, and engines that cover every kind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.activations import ACTIVATIONS
from core.initializers import INITIALIZERS
from core.layers import LAYERS
from core.losses import LOSSES
from core.optimizers import OPTIMIZERS
from core.registry import Registry, UnknownKind
from tests.support import ROOT
from worker.engines import keras_engine
from worker.engines.numpy_engine import layers as numpy_layers
from worker.engines.numpy_engine import optimizers as numpy_optimizers

PROBE = r"""
import importlib, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for module in pkgutil.walk_packages(package.__path__, sys.argv[1] + "."):
    importlib.import_module(module.name)
print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2:])))
"""


@pytest.mark.parametrize(
    ("package", "absent"),
    [
        ("worker", ["flask", "werkzeug", "service", "tensorflow", "keras"]),
        ("core", ["flask", "werkzeug", "celery", "kombu", "service", "worker", "tensorflow"]),
    ],
)
def test_importing_every_module_of_a_side_leaves_the_others_out(
    package: str, absent: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, package, *absent],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"{package} loads {result.stdout.strip()}"


@pytest.mark.parametrize(
    ("declared", "builders"),
    [
        (LAYERS, numpy_layers.BUILDERS),
        (OPTIMIZERS, numpy_optimizers.OPTIMIZERS),
        (LAYERS, keras_engine.LAYERS),
        (ACTIVATIONS, keras_engine.ACTIVATIONS),
        (LOSSES, keras_engine.LOSSES),
        (OPTIMIZERS, keras_engine.OPTIMIZERS),
        (INITIALIZERS, keras_engine.INITIALIZERS),
    ],
    ids=lambda r: r.kind,
)
def test_each_engine_has_a_builder_for_every_declared_kind(
    declared: Registry[object], builders: Registry[object]
) -> None:
    assert sorted(builders.names) == sorted(declared.names)


def test_a_kind_without_a_builder_is_a_clear_error_not_a_fall_through() -> None:
    with pytest.raises(UnknownKind, match="unknown keras engine optimizer 'adamw'; one of sgd"):
        keras_engine.OPTIMIZERS.get("adamw")
    with pytest.raises(UnknownKind, match="numpy engine layer type 'conv2d'"):
        numpy_layers.BUILDERS.get("conv2d")
