"""The benchmarks' shared setup: nothing but keeping a checkout's root off sys.path (see drop_checkout_root)."""
from pathlib import Path

from vidrt.testing import drop_checkout_root

drop_checkout_root(Path(__file__).resolve().parents[1])   # before any benchmark imports transformers / diffusers
