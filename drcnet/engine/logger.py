"""Logging set-up for the commands: basicsr's logger name, console on rank 0, a log file per run."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

LOGGER_NAME = 'basicsr'
_FORMAT = '%(asctime)s %(levelname)s: %(message)s'


def setup_logger(log_file: str | Path | None = None, rank: int = 0, level: int = logging.INFO) -> logging.Logger:
    """Configure the 'basicsr' logger once per process; a new ``log_file`` replaces the previous one."""
    log = logging.getLogger(LOGGER_NAME)
    log.propagate = False
    for handler in list(log.handlers):
        if getattr(handler, '_drcnet', False):
            log.removeHandler(handler)
            handler.close()
    log.setLevel(level if rank == 0 else logging.ERROR)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter(_FORMAT))
    console._drcnet = True
    log.addHandler(console)
    if log_file is not None and rank == 0:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, mode='a')
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        file_handler._drcnet = True
        log.addHandler(file_handler)
    return log


def format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return (f'{days}d ' if days else '') + f'{h:02d}:{m:02d}:{s:02d}'
