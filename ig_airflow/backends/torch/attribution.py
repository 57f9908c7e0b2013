"""PyTorch specifics of IG: the device, and Captum as the reference engine (``ig.engine:
captum``). The vectorised engine itself is framework-neutral
(:mod:`ig_airflow.core.attribution`); Captum runs through the same model wrapper and layer
hooks, so both engines explain the same function.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ig_airflow.config import IGSection
from ig_airflow.core.attribution import InputAttributor, LayerAttributor
from ig_airflow.core.backend import PathGradients
from ig_airflow.exceptions import ConfigError


def resolve_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("ig.device: cuda requested but torch.cuda.is_available() is False")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def require_captum_method(settings: IGSection) -> None:
    """Captum has no textbook trapezoid rule, and places no points row by row."""
    if settings.method in ("trapezoid", "adaptive_trapezoid"):
        raise ConfigError(f"ig.method: the captum engine has no {settings.method} rule; use gausslegendre")


class CaptumAttributor(InputAttributor):
    """The same attributions computed by plain Captum ``IntegratedGradients`` (inputs and
    embedding outputs) and ``LayerIntegratedGradients`` (hidden layers), with a fixed rule
    (``ig.engine: captum`` defaults to ``gausslegendre``)."""

    def path_gradients(
        self,
        numeric: np.ndarray,
        categorical: np.ndarray,
        alphas: np.ndarray,
        targets: np.ndarray | None = None,
    ) -> PathGradients:
        """Captum integrates with its own fixed rules only."""
        raise ConfigError(
            "ig.engine captum explains with fixed rules only (ig.method: gausslegendre, riemann_*)"
        )

    def _captum_batch(self, n_rows: int) -> int:
        return max(n_rows, (self.internal_batch_size // n_rows) * n_rows)

    def input_integrals(
        self, values: list[Any], bases: list[Any], x_cat: Any, n_steps: int, targets: np.ndarray
    ) -> list[np.ndarray]:
        from captum.attr import IntegratedGradients

        require_captum_method(self.settings)
        n_rows = len(values[0])

        def forward(numeric: torch.Tensor, *layer_values: torch.Tensor) -> torch.Tensor:
            categories = x_cat.repeat(max(1, len(numeric) // n_rows), 1)
            with self.adapter.substitute(self.layers, layer_values):
                return self.adapter(numeric, categories)

        ig = IntegratedGradients(forward, multiply_by_inputs=False)
        per_target = [
            ig.attribute(
                tuple(values),
                baselines=tuple(b.expand_as(v) for b, v in zip(bases, values, strict=True)),
                target=self._target(targets, t),
                n_steps=n_steps,
                method=self.settings.method,
                internal_batch_size=self._captum_batch(n_rows),
            )
            for t in range(targets.shape[1])
        ]
        return [np.stack([self.ops.numpy(r[i]) for r in per_target], axis=1) for i in range(len(values))]

    def layer_integrals(
        self,
        layer: LayerAttributor,
        x_num: Any,
        x_cat: Any,
        activation: Any,
        n_steps: int,
        targets: np.ndarray,
    ) -> np.ndarray:
        from captum.attr import LayerIntegratedGradients

        require_captum_method(self.settings)
        layer_ig = LayerIntegratedGradients(self.adapter, layer.layer, multiply_by_inputs=False)
        per_target = [
            layer_ig.attribute(
                (x_num, x_cat),
                baselines=(self.base_num.expand_as(x_num), self.base_cat.expand_as(x_cat)),
                target=self._target(targets, t),
                n_steps=n_steps,
                method=self.settings.method,
                internal_batch_size=self._captum_batch(len(x_num)),
            )
            for t in range(targets.shape[1])
        ]
        return np.stack([self.ops.numpy(r) for r in per_target], axis=1)

    def _target(self, targets: np.ndarray, t: int) -> torch.Tensor:
        return torch.as_tensor(targets[:, t], dtype=torch.long, device=self.adapter.device)


def torch_attributor(wrapper: Any, baseline: Any, settings: IGSection) -> InputAttributor:
    """The attributor ``ig.engine`` names: the vectorised one, or Captum."""
    engine = CaptumAttributor if settings.engine == "captum" else InputAttributor
    return engine(wrapper, baseline, settings)
