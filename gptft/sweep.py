"""After a Hydra multirun: one table of every job's overrides and final metrics."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .atomic import write_text


def collect(sweep_dir: Path) -> list[dict]:
    rows = []
    for metrics_file in sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0):
        job = metrics_file.parent
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.load(overrides_file) if overrides_file.exists() else []
        m = json.loads(metrics_file.read_text())
        rows.append({"job": job.name, "overrides": " ".join(overrides), **m.get("flat", {}),
                     "wall_time_s": m.get("wall_time_s")})
    return rows


def write_summary(sweep_dir: Path) -> str:
    rows = collect(sweep_dir)
    if not rows:
        return f"no finished jobs under {sweep_dir}"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    table = io.StringIO(newline="")
    w = csv.DictWriter(table, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    write_text(sweep_dir / "summary.csv", table.getvalue())
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    text = "\n".join(md)
    write_text(sweep_dir / "summary.md", text + "\n")
    return text


def best_job(rows: list[dict], metric: str, mode: str) -> dict | None:
    """The row with the best `metric` (`mode` max or min; the first of equals); None when no job has it."""
    scored = [r for r in rows if isinstance(r.get(metric), (int, float))]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda r: r[metric])


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        text = write_summary(sweep_dir)
        best = best_job(collect(sweep_dir), config.optimized_metric, config.task.monitor_mode)
        if best is not None:
            text += (f"\n\nbest: job {best['job']} ({best['overrides']}), {config.optimized_metric} "
                     f"{best[config.optimized_metric]:.4f}")
            write_text(sweep_dir / "summary.md", text + "\n")
        print(f"\nsweep summary ({sweep_dir / 'summary.md'}):\n{text}", flush=True)
