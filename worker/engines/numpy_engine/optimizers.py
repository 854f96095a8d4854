"""Optimizers with Keras 3's update rules and defaults, bound to the parameters they update.

An optimizer is built with the network's flat parameter buffer and its gradient buffer (every
weight is a view into them), and keeps its state in plain arrays beside them. The base class keeps
what is shared (the step counter, the buffers); each optimizer writes only its state set-up and its
in-place update. `OPTIMIZERS` keys them by the names `core.optimizers` declares.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from core import optimizers as core
from core.optimizers import OptimizerSpec
from core.registry import Registry


class Optimizer:
    # The names of the state arrays it keeps beside the parameters (a checkpoint saves them).
    SLOTS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: NDArray, grads: NDArray, spec: Any) -> None:
        self.params, self.grads = params, grads
        self.spec = spec  # its hyper-parameters, as core.optimizers declares them
        self.learning_rate: float = spec.learning_rate
        self.iterations = 0

    def step(self) -> None:
        """One training step: update the parameters in place from the gradients."""
        self.iterations += 1
        self.update(self.params, self.grads)

    def update(self, param: NDArray, grad: NDArray) -> None:
        raise NotImplementedError

    def slots(self) -> dict[str, NDArray]:
        """Copies of its state arrays, named `optimizer.<slot>`."""
        return {
            f"optimizer.{name}": value.copy()
            for name in self.SLOTS
            if (value := getattr(self, name)) is not None
        }

    def load_slots(self, arrays: dict[str, NDArray], iterations: int) -> None:
        """Take up the state `slots()` saved after `iterations` steps."""
        for name in self.SLOTS:
            value = getattr(self, name)
            if value is not None:
                value[...] = arrays[f"optimizer.{name}"]
        self.iterations = iterations


class SGD(Optimizer):
    SLOTS = ("m",)

    def __init__(self, params: NDArray, grads: NDArray, spec: core.SGD) -> None:
        super().__init__(params, grads, spec)
        self.momentum, self.nesterov = spec.momentum, spec.nesterov
        self.m = np.zeros_like(params) if spec.momentum else None

    def update(self, param: NDArray, grad: NDArray) -> None:
        lr = param.dtype.type(self.learning_rate)
        if self.m is None:
            param -= lr * grad
            return
        m = self.m
        m *= self.momentum
        m -= lr * grad
        if self.nesterov:
            param += self.momentum * m - lr * grad
        else:
            param += m


class RMSprop(Optimizer):
    SLOTS = ("v",)

    def __init__(self, params: NDArray, grads: NDArray, spec: core.RMSprop) -> None:
        super().__init__(params, grads, spec)
        self.rho, self.epsilon = spec.rho, spec.epsilon
        self.v = np.zeros_like(params)

    def update(self, param: NDArray, grad: NDArray) -> None:
        v = self.v
        v *= self.rho
        v += (1.0 - self.rho) * np.square(grad)
        # Keras 3 puts epsilon inside the square root for RMSprop.
        param -= self.learning_rate * grad / np.sqrt(v + self.epsilon)


class Adam(Optimizer):
    SLOTS = ("m", "v")

    def __init__(self, params: NDArray, grads: NDArray, spec: core.Adam) -> None:
        super().__init__(params, grads, spec)
        self.beta_1, self.beta_2, self.epsilon = spec.beta_1, spec.beta_2, spec.epsilon
        self.m, self.v, self.tmp = (np.zeros_like(params) for _ in range(3))

    def update(self, param: NDArray, grad: NDArray) -> None:
        t = self.iterations
        # Keras folds both bias corrections into the step size and adds epsilon outside the
        # root ("epsilon hat" in the Adam paper's notation).
        alpha = self.learning_rate * np.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)
        m, v, tmp = self.m, self.v, self.tmp
        # In place, through one scratch buffer: no allocation per step.
        np.subtract(grad, m, out=tmp)
        tmp *= 1.0 - self.beta_1
        m += tmp  # m += (1 - beta_1) (g - m)
        np.square(grad, out=tmp)
        tmp -= v
        tmp *= 1.0 - self.beta_2
        v += tmp  # v += (1 - beta_2) (g^2 - v)
        np.sqrt(v, out=tmp)
        tmp += self.epsilon
        np.divide(m, tmp, out=tmp)
        tmp *= alpha
        param -= tmp  # param -= alpha m / (sqrt(v) + epsilon)


# Each optimizer class, built with (params, grads, spec), keyed by its core name.
OPTIMIZERS: Registry[type[Optimizer]] = Registry(
    "numpy engine optimizer", {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}
)


def make_optimizer(spec: OptimizerSpec, params: NDArray, grads: NDArray) -> Optimizer:
    """The optimizer a spec's `optimizer` section describes, bound to these buffers."""
    return OPTIMIZERS.get(spec.type)(params, grads, spec)
