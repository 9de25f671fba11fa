"""Where each stage reads and writes, relative to the project root.

``dvc.yaml`` names the same paths (a test keeps the two in step); the stage commands pass them on
the command line, and the top-level Prefect flow uses these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """Paths of the pipeline's inputs and outputs."""

    params: str = "params.yaml"
    raw: str = "data/raw"
    prepared: str = "data/prepared"
    models: str = "models"
    metrics: str = "metrics"
    checkpoints: str = "checkpoints"
    pipeline_lock: str = ".landcover.lock"
    reports: str = "reports"
    lock: str = "dvc.lock"
    stage_times: str = "logs/stage_times"  # each stage command's last wall time (not in DVC)
    stage_logs: str = "logs/stages"  # each stage command's last log, tracebacks included

    def model_dir(self, scheme: str) -> str:
        """Where the model trained under ``scheme`` goes."""
        return f"{self.models}/{scheme}"

    def checkpoint_dir(self, scheme: str) -> str:
        """Where training under ``scheme`` keeps its checkpoints (not a DVC output)."""
        return f"{self.checkpoints}/{scheme}"

    def metrics_file(self, scheme: str) -> str:
        """The DVC metrics file of ``scheme``'s evaluation."""
        return f"{self.metrics}/{scheme}.json"

    def reports_dir(self, scheme: str) -> str:
        """The evaluation's reports of ``scheme``: tables, confusion matrix, map, timings."""
        return f"{self.reports}/{scheme}"


LAYOUT = Layout()
