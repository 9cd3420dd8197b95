"""`key=value` command-line arguments for the small user-facing commands (Hydra's override style)."""
from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf


def parse(defaults: dict, usage: str, argv: list[str] | None = None) -> DictConfig:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        raise SystemExit(0)
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise SystemExit(f"arguments must be key=value, got {bad}\n\n{usage}")
    cfg = OmegaConf.create(defaults)
    given = OmegaConf.from_dotlist(argv)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise SystemExit(f"unknown argument(s) {unknown}; valid: {sorted(defaults)}\n\n{usage}")
    return OmegaConf.merge(cfg, given)
