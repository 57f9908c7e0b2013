"""The TensorFlow / Keras 3 backend: artifact files and the model adapter behind
:class:`KerasBackend` (entry point ``ig_airflow.backends: tensorflow``)."""

import os

from ig_airflow.backends.keras.backend import KerasBackend

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported

__all__ = ["KerasBackend"]
