"""The interface a framework backend implements, and the registry that picks one.

A backend owns everything framework-specific: saving and loading its model files, turning
encoded rows into tensors, calling the model, and the few tensor operations the
framework-neutral IG algorithm (:mod:`ig_airflow.core.attribution`) needs. Nothing outside
``ig_airflow/backends/`` branches on the framework: artifacts, runners and operators ask the
registry for the backend named in the artifact's metadata (``framework``).

Backends are found by name, first among those registered in this process
(:func:`register_backend`), then among the ``ig_airflow.backends`` entry points of installed
packages (ours: ``pytorch``, ``tensorflow``). A third framework is one package with a class
implementing :class:`FrameworkBackend`, registered either way.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ig_airflow.exceptions import ArtifactError

if TYPE_CHECKING:
    from ig_airflow.config import IGSection
    from ig_airflow.core.baselines import Baseline
    from ig_airflow.spec import ArtifactMetadata, InputSpec

ENTRY_POINT_GROUP = "ig_airflow.backends"


@dataclass
class FixedStepResult:
    """Attributions of a block of B rows with T targets each at one step count; every array
    has one entry per (row, target), rows major (B * T)."""

    attributions: np.ndarray  # [B*T, F] in input-spec order, multiplied by (x - x')
    integrated_gradients: np.ndarray  # [B*T, F] without the (x - x') factor (summed over emb dims)
    prediction: np.ndarray  # [B*T] the target's calibrated score at the input
    baseline_prediction: np.ndarray  # [B*T] the target's score at the baseline
    targets: np.ndarray  # int [B, T] the output column of each target


@dataclass
class PathGradients:
    """The IG integrand of a block of B rows with T targets each at every row's own path points
    ``alphas`` (``[B, n]``, ``x' + alpha * (x - x')``); arrays have one entry per (row, target),
    rows major (B * T), then one per point."""

    attributions: np.ndarray  # [B*T, n, F] gradient x (x - x') per feature in input-spec order
    gradients: np.ndarray  # [B*T, n, F] the gradient alone (summed over embedding dims)
    scores: np.ndarray  # [B*T, n] the target's calibrated score at each point
    prediction: np.ndarray  # [B*T] the target's score at the input
    baseline_prediction: np.ndarray  # [B*T] the target's score at the baseline
    targets: np.ndarray  # int [B, T] the output column of each target


class Attributor(Protocol):
    """Computes IG for blocks of rows against one baseline (what :mod:`ig_airflow.core.adaptive`
    refines); ``layer(name)`` gives one for the units of a hidden layer (with ``units``).
    ``targets`` (``[B, T]`` output columns) are resolved from the rows' scores when None.

    ``attribute`` integrates with the fixed rule ``ig.method`` at ``n_steps`` points;
    ``path_gradients`` returns the integrand at each row's own points, for rules that place
    them row by row (``adaptive_trapezoid``). ``output_scale`` is the explained output's scale,
    the unit of ``ig.atol`` (1 for a probability)."""

    output_scale: float

    def attribute(
        self, numeric: np.ndarray, categorical: np.ndarray, n_steps: int, targets: np.ndarray | None = None
    ) -> FixedStepResult: ...

    def path_gradients(
        self,
        numeric: np.ndarray,
        categorical: np.ndarray,
        alphas: np.ndarray,
        targets: np.ndarray | None = None,
    ) -> PathGradients: ...


class TensorOps(Protocol):
    """The tensor operations of one framework that the neutral algorithms use."""

    def constant(self, array: np.ndarray) -> Any: ...
    def numpy(self, tensor: Any) -> np.ndarray: ...  # float64 copy on the host
    def interpolate(self, base: Any, values: Any, alphas: Any) -> Any: ...
    def integrate(self, grad: Any, weights: Any, rows: int) -> Any: ...
    # fn(inputs) -> [N, T]; per target t, the gradients of its column's sum w.r.t. the inputs
    def gradients(self, fn: Callable[[list[Any]], Any], inputs: list[Any]) -> list[list[Any]]: ...
    def take(self, tensor: Any, columns: np.ndarray) -> Any: ...  # [N, K] of row-wise columns
    def concat(self, parts: Sequence[Any]) -> Any: ...
    def repeat(self, tensor: Any, times: int) -> Any: ...
    def reshape(self, tensor: Any, shape: tuple[int, ...]) -> Any: ...
    def sigmoid(self, tensor: Any) -> Any: ...
    def softmax(self, tensor: Any) -> Any: ...
    def log(self, tensor: Any) -> Any: ...  # natural log, elementwise


class ModelAdapter(Protocol):
    """A loaded model as the IG algorithm sees it: ``adapter(x_float, x_index)`` (the blocks of
    :func:`ig_airflow.core.calling.model_arrays`) calls the model as ``metadata.inputs.calling``
    says and returns the calibrated scores ``[batch, n_outputs]``; layers can be captured or
    substituted."""

    ops: TensorOps
    metadata: ArtifactMetadata
    embedding_layers: list[Any]

    def __call__(self, x_num: Any, x_cat: Any) -> Any: ...
    def tensors(self, numeric: np.ndarray, categorical: np.ndarray) -> tuple[Any, Any]: ...
    def layer(self, name: str) -> Any: ...
    def capture(self, layers: Sequence[Any]) -> AbstractContextManager[list[Any]]: ...
    def substitute(self, layers: Sequence[Any], values: Sequence[Any]) -> AbstractContextManager[None]: ...
    def inference(self) -> AbstractContextManager[Any]: ...
    def bytes_per_interpolated_row(self, x_num: Any, x_cat: Any) -> int: ...


@dataclass(frozen=True)
class SavedModelFile:
    """What a backend wrote into an artifact directory."""

    loader: str
    model_file: str
    model_class: str | None = None


@runtime_checkable
class FrameworkBackend(Protocol):
    """One framework: artifact files in and out, and IG for its models.

    Attributes:
        name: the artifact metadata's ``framework`` value, e.g. ``"pytorch"``.
        loaders: the ``loader`` values this backend reads; the first is the default.
    """

    name: str
    loaders: tuple[str, ...]

    def owns(self, model: Any) -> bool:
        """Whether ``model`` (an object handed to ``save_artifact``) belongs to this framework."""
        ...

    def save(
        self, model: Any, directory: Path, spec: InputSpec, loader: str | None, model_class: str | None
    ) -> SavedModelFile:
        """Write the model file(s) into ``directory``."""
        ...

    def load(self, path: Path, metadata: ArtifactMetadata, allow_pickle: bool, uri: str) -> Any:
        """Load the verified model file at ``path``."""
        ...

    def check(self, model: Any, metadata: ArtifactMetadata) -> None:
        """Raise :class:`ArtifactError` when the metadata does not fit the model (layer names)."""
        ...

    def predict(
        self, model: Any, metadata: ArtifactMetadata, numeric: np.ndarray, categorical: np.ndarray
    ) -> np.ndarray:
        """The calibrated scores ``[rows, n_outputs]`` of encoded rows, float64."""
        ...

    def attributor(
        self, model: Any, metadata: ArtifactMetadata, baseline: Baseline, settings: IGSection
    ) -> Attributor:
        """An :class:`Attributor` for ``model`` against ``baseline``."""
        ...

    def limit_threads(self, threads: int) -> None:
        """Use at most ``threads`` CPU threads in this process (Ray workers)."""
        ...

    def randomised(self, model: Any, seed: int) -> AbstractContextManager[None]:
        """Within the context, every weight tensor of ``model`` redrawn from a normal distribution
        with its own standard deviation (a model-randomisation sanity check, Adebayo et al. 2018);
        the trained weights are restored on exit."""
        ...


_registered: dict[str, FrameworkBackend] = {}


def register_backend(backend: FrameworkBackend) -> None:
    """Make ``backend`` available under ``backend.name`` in this process (overrides an entry point)."""
    if not isinstance(backend, FrameworkBackend):
        raise TypeError(f"{backend!r} does not implement FrameworkBackend")
    _registered[backend.name] = backend


def unregister_backend(name: str) -> None:
    """Forget a backend registered with :func:`register_backend`."""
    _registered.pop(name, None)
    _entry_point_backend.cache_clear()


def backend_names() -> list[str]:
    """Every framework name that a backend is known for (loading none of them)."""
    installed = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(installed | set(_registered))


def get_backend(name: str) -> FrameworkBackend:
    """The backend registered for framework ``name``."""
    if name in _registered:
        return _registered[name]
    backend = _entry_point_backend(name)
    if backend is None:
        raise ArtifactError(f"no backend for framework {name!r}; known frameworks: {backend_names()}")
    return backend


def backend_for_model(model: Any) -> FrameworkBackend:
    """The backend that owns a model object (for saving)."""
    for backend in _all_backends():
        if backend.owns(model):
            return backend
    raise ArtifactError(
        f"cannot save {type(model).__name__}: no backend owns it (frameworks: {backend_names()}); "
        "expected e.g. a torch.nn.Module or keras.Model"
    )


def _all_backends() -> Iterator[FrameworkBackend]:
    for name in backend_names():
        yield get_backend(name)


@functools.cache
def _entry_point_backend(name: str) -> FrameworkBackend | None:
    """The backend of an installed package's entry point, built once per process."""
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
        backend = entry_point.load()
        return backend() if isinstance(backend, type) else backend
    return None
