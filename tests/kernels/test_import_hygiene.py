"""``import vidrt.kernels`` must not import triton: the kernel modules are loaded lazily by the runtime."""
import subprocess
import sys


def test_import_vidrt_kernels_does_not_import_triton():
    code = "import sys, vidrt.kernels, vidrt.attention; print('triton' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"
