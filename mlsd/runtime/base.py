"""What every runner shares: the input type, the protocol, the error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
import torch

Inputs = np.ndarray | Mapping[str, np.ndarray | torch.Tensor]


class RunnerError(RuntimeError):
    """A model that cannot be loaded or run by its backend; the message says which."""


class ModelRunner(Protocol):
    backend: str
    device: str

    def run(self, x: Inputs) -> np.ndarray: ...


def as_numpy(v) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
