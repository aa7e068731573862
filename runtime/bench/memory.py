"""Peak memory of one measured run: resident set size sampled from /proc, CUDA max allocated.

``resource.getrusage().ru_maxrss`` is the peak over the whole process lifetime, so it cannot tell
one case from the next; a sampling thread reading /proc/self/statm gives the peak of a window
(to within the sampling period; large allocations live far longer than that). On systems without
/proc the RSS fields are None.
"""
from __future__ import annotations

import os
import threading
from typing import Optional

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = "/proc/self/statm"


def current_rss_bytes() -> Optional[int]:
    """Resident set size of this process now, or None where /proc is not available."""
    try:
        with open(_STATM) as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


class PeakMemory:
    """Context manager measuring peak RSS (and CUDA max allocated on ``device``) inside the block.

    >>> with PeakMemory() as m: run()
    >>> m.peak_rss, m.start_rss, m.cuda_max_allocated
    """

    def __init__(self, device: Optional[torch.device] = None, interval_s: float = 0.005):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.interval_s = interval_s
        self.start_rss: Optional[int] = None
        self.peak_rss: Optional[int] = None
        self.cuda_max_allocated: Optional[int] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self) -> None:
        rss = current_rss_bytes()
        if rss is not None and (self.peak_rss is None or rss > self.peak_rss):
            self.peak_rss = rss

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "PeakMemory":
        self.start_rss = current_rss_bytes()
        self.peak_rss = self.start_rss
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        if self.start_rss is not None:
            self._thread = threading.Thread(target=self._loop, name="vidrt-bench-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.cuda_max_allocated = int(torch.cuda.max_memory_allocated(self.device))
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    @property
    def peak_delta(self) -> Optional[int]:
        """Peak RSS above the RSS at the start of the block (the run's own working memory)."""
        if self.peak_rss is None or self.start_rss is None:
            return None
        return self.peak_rss - self.start_rss
