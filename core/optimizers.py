"""Optimizers: each one registry entry, its spec model with Keras 3's defaults.

The engines key their implementations by the same names (`worker/engines/numpy_engine/
optimizers.py`, `worker/engines/keras_engine.py`). In a job spec an optimizer is an object
(`{"type": "adam", "learning_rate": 0.01}`) or a bare name for its defaults, as Keras's
compile() takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field

from core.registry import Registry
from core.schema import Strict

LearningRate = Annotated[float, Field(gt=0, le=100)]
Decay = Annotated[float, Field(ge=0, lt=1)]
Epsilon = Annotated[float, Field(gt=0, le=1)]


class OptimizerSpec(Strict):
    type: str
    learning_rate: float


class SGD(OptimizerSpec):
    type: Literal["sgd"]
    learning_rate: LearningRate = 0.01
    momentum: Decay = 0.0
    nesterov: bool = False


class RMSprop(OptimizerSpec):
    type: Literal["rmsprop"]
    learning_rate: LearningRate = 0.001
    rho: Decay = 0.9
    epsilon: Epsilon = 1e-7


class Adam(OptimizerSpec):
    type: Literal["adam"]
    learning_rate: LearningRate = 0.001
    beta_1: Decay = 0.9
    beta_2: Decay = 0.999
    epsilon: Epsilon = 1e-7


def _tag(model: type[OptimizerSpec]) -> str:
    name: str = model.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    return name


OPTIMIZERS: Registry[type[OptimizerSpec]] = Registry("optimizer", (SGD, RMSprop, Adam), name=_tag)


def _shorthand(value: Any) -> Any:
    """Accept "adam" for {"type": "adam"}, as Keras's compile() does."""
    return {"type": value} if isinstance(value, str) else value


if TYPE_CHECKING:
    OptimizerField = OptimizerSpec
else:
    _SPECS = Union[tuple(OPTIMIZERS.get(name) for name in OPTIMIZERS)]  # noqa: UP007
    OptimizerField = Annotated[
        _SPECS,
        Field(discriminator="type"),
        BeforeValidator(
            _shorthand,
            json_schema_input_type=Union[Literal[OPTIMIZERS.names], _SPECS],  # noqa: UP007
        ),
    ]
