"""The framework-neutral core: quadrature, adaptive steps, chunking, baselines, encoding and the
IG algorithm. Nothing here imports torch, tensorflow, ray or airflow."""
