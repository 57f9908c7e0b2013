"""A small tabular PyTorch model: standardised numerics + one embedding per categorical
column -> ReLU MLP -> one logit. Trained on UCI Adult for the demo."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ig_airflow.spec import CategoricalFeature, InputSpec, NumericFeature


class TabularNet(nn.Module):
    """``forward(x_num [B, n_numeric], x_cat [B, n_categorical]) -> logits [B]`` (or
    ``[B, n_outputs]`` for more than one output).

    ``numeric_input`` is an identity layer that marks where numeric inputs enter (handy for
    Captum's LayerIntegratedGradients); ``embeddings.<feature>`` holds each embedding.
    """

    def __init__(
        self,
        n_numeric: int,
        categorical: Sequence[str],
        cardinalities: Sequence[int],
        embedding_dim: int = 8,
        hidden: Sequence[int] = (64, 32),
        n_outputs: int = 1,
    ):
        super().__init__()
        self.categorical = list(categorical)
        self.numeric_input = nn.Identity()
        self.register_buffer("numeric_mean", torch.zeros(n_numeric))
        self.register_buffer("numeric_std", torch.ones(n_numeric))
        self.embeddings = nn.ModuleDict(
            {
                name: nn.Embedding(card, embedding_dim)
                for name, card in zip(categorical, cardinalities, strict=True)
            }
        )
        layers: list[nn.Module] = []
        width = n_numeric + embedding_dim * len(self.categorical)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, n_outputs))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        numeric = (self.numeric_input(x_num) - self.numeric_mean) / self.numeric_std
        embedded = [self.embeddings[name](x_cat[:, j]) for j, name in enumerate(self.categorical)]
        logits = self.mlp(torch.cat([numeric, *embedded], dim=1))
        return logits.squeeze(-1) if logits.shape[-1] == 1 else logits


def input_spec_from_frame(
    frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]
) -> InputSpec:
    """Input spec with vocabularies (sorted observed values, OOV at index 0) and the numeric
    ranges seen in ``frame``; embedding layers are ``embeddings.<feature>``."""
    return InputSpec(
        numeric=[NumericFeature(name=c) for c in numeric],
        categorical=[
            CategoricalFeature(
                name=c,
                vocabulary=sorted(frame[c].astype(str).unique().tolist()),
                oov_index=0,
                embedding_layer=f"embeddings.{c}",
            )
            for c in categorical
        ],
    )


def train_tabular_net(
    frame: pd.DataFrame,
    spec: InputSpec,
    label: str,
    *,
    epochs: int = 6,
    seed: int = 0,
    embedding_dim: int = 8,
    hidden: Sequence[int] = (64, 32),
) -> tuple[TabularNet, dict]:
    """Train :class:`TabularNet` with Adam on binary cross-entropy; returns the model and its
    constructor kwargs (what ``save_artifact`` needs)."""
    from ig_airflow.core.encoding import encode_rows

    torch.manual_seed(seed)
    kwargs = {
        "n_numeric": len(spec.numeric),
        "categorical": spec.categorical_names,
        "cardinalities": [f.cardinality for f in spec.categorical],
        "embedding_dim": embedding_dim,
        "hidden": list(hidden),
    }
    model = TabularNet(**kwargs)
    numeric, categorical = encode_rows(frame, spec)
    model.numeric_mean.copy_(torch.as_tensor(numeric.mean(0), dtype=torch.float32))
    model.numeric_std.copy_(torch.as_tensor(numeric.std(0) + 1e-6, dtype=torch.float32))
    x_num = torch.as_tensor(numeric, dtype=torch.float32)
    x_cat = torch.as_tensor(categorical)
    y = torch.as_tensor(frame[label].to_numpy(dtype=np.float32, copy=True))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-5)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=generator).split(256):
            optimiser.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(model(x_num[idx], x_cat[idx]), y[idx])
            loss.backward()
            optimiser.step()
    model.eval()
    return model, kwargs


def fit_platt(logits: np.ndarray, labels: np.ndarray, iterations: int = 200) -> tuple[float, float]:
    """Fit Platt scaling ``sigmoid(a*z + b)`` to held-out logits by logistic regression."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(np.array(labels, dtype=np.float64))
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([params], max_iter=iterations)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(params[0] * z + params[1], y)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(params[0].detach()), float(params[1].detach())
