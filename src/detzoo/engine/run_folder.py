"""The run folder: resolved ``config.yaml``, ``metrics.csv`` (one row per epoch) and checkpoints."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from ..common.files import write_text


def new_run_dir(output: str, name: str | None, model_name: str) -> Path:
    """A fresh folder under ``output``; never reuses (and so never overwrites) an existing run."""
    base = Path(output) / (name or f"{model_name}-{time.strftime('%Y%m%d-%H%M%S')}")
    path, n = base, 2
    while path.exists():
        path = base.with_name(f"{base.name}-{n}")
        n += 1
    path.mkdir(parents=True)
    return path


class MetricsLog:
    """Rows of per-epoch numbers, rewritten atomically as CSV after every epoch."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []
        if path.is_file():
            with open(path, newline="") as handle:
                self.rows = list(csv.DictReader(handle))

    def truncate(self, epochs_done: int) -> None:
        """Forget rows of epochs after a resume point (they will be run again)."""
        self.rows = [r for r in self.rows if int(float(r["epoch"])) <= epochs_done]

    def append(self, row: dict) -> None:
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        columns: list[str] = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.path, buffer.getvalue())
