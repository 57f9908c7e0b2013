"""The PyTorch backend: artifact files, the model wrapper and Captum, behind
:class:`TorchBackend` (entry point ``ig_airflow.backends: pytorch``)."""

from ig_airflow.backends.torch.backend import TorchBackend

__all__ = ["TorchBackend"]
