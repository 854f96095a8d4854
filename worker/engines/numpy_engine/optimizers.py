"""Optimizers with Keras 3's update rules and defaults.

The base class keeps what is shared (the step counter, per-parameter state); each optimizer
writes only its state set-up and its in-place update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.spec import SGD, Adam, RMSprop

State = dict[str, NDArray]


class Optimizer:
    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = learning_rate
        self.iterations = 0
        self._state: dict[int, State] = {}

    def apply(self, params: list[tuple[NDArray, NDArray]]) -> None:
        """Update each (parameter, gradient) pair in place; one call is one training step."""
        self.iterations += 1
        for param, grad in params:
            state = self._state.get(id(param))
            if state is None:
                state = self._state[id(param)] = self.build(param)
            self.update(param, grad, state)

    def build(self, param: NDArray) -> State:
        return {}

    def update(self, param: NDArray, grad: NDArray, state: State) -> None:
        raise NotImplementedError


class SGDOptimizer(Optimizer):
    def __init__(self, learning_rate: float, momentum: float, nesterov: bool) -> None:
        super().__init__(learning_rate)
        self.momentum = momentum
        self.nesterov = nesterov

    def build(self, param: NDArray) -> State:
        return {"m": np.zeros_like(param)} if self.momentum else {}

    def update(self, param: NDArray, grad: NDArray, state: State) -> None:
        lr = param.dtype.type(self.learning_rate)
        if not self.momentum:
            param -= lr * grad
            return
        m = state["m"]
        m *= self.momentum
        m -= lr * grad
        if self.nesterov:
            param += self.momentum * m - lr * grad
        else:
            param += m


class RMSpropOptimizer(Optimizer):
    def __init__(self, learning_rate: float, rho: float, epsilon: float) -> None:
        super().__init__(learning_rate)
        self.rho = rho
        self.epsilon = epsilon

    def build(self, param: NDArray) -> State:
        return {"v": np.zeros_like(param)}

    def update(self, param: NDArray, grad: NDArray, state: State) -> None:
        v = state["v"]
        v *= self.rho
        v += (1.0 - self.rho) * np.square(grad)
        # Keras 3 puts epsilon inside the square root for RMSprop.
        param -= self.learning_rate * grad / np.sqrt(v + self.epsilon)


class AdamOptimizer(Optimizer):
    def __init__(self, learning_rate: float, beta_1: float, beta_2: float, epsilon: float) -> None:
        super().__init__(learning_rate)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def build(self, param: NDArray) -> State:
        return {"m": np.zeros_like(param), "v": np.zeros_like(param), "tmp": np.empty_like(param)}

    def update(self, param: NDArray, grad: NDArray, state: State) -> None:
        t = self.iterations
        # Keras folds both bias corrections into the step size and adds epsilon outside the
        # root ("epsilon hat" in the Adam paper's notation).
        alpha = self.learning_rate * np.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)
        m, v, tmp = state["m"], state["v"], state["tmp"]
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


OPTIMIZERS: dict[str, Callable[[Any], Optimizer]] = {
    "sgd": lambda s: SGDOptimizer(s.learning_rate, s.momentum, s.nesterov),
    "rmsprop": lambda s: RMSpropOptimizer(s.learning_rate, s.rho, s.epsilon),
    "adam": lambda s: AdamOptimizer(s.learning_rate, s.beta_1, s.beta_2, s.epsilon),
}


def make_optimizer(spec: SGD | RMSprop | Adam) -> Optimizer:
    """Build the optimizer a spec's `optimizer` section describes."""
    return OPTIMIZERS[spec.type](spec)
