"""What every use of NVIDIA NeMo in the project shares: quiet logs, and no network."""

from __future__ import annotations

import logging


def quiet_nemo() -> None:
    """NeMo, its telemetry shim and nemo_text_processing log at INFO/WARNING on every import and
    grammar load; keep errors only. Call before importing nemo."""
    for name in ("nv_one_logger", "NeMo-text-processing", "nemo_logger"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)
