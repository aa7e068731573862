"""`import vidrt` stays light and exposes the public API; generic names are not importable at top level."""
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_import_is_light_and_api_is_there():
    code = ("import sys, vidrt; heavy = [m for m in ('transformers', 'triton', 'diffusers', 'onnxruntime', "
            "'tensorrt', 'flash_attn') if m in sys.modules]; assert not heavy, heavy; "
            "assert vidrt.Pipeline.__name__ == 'Pipeline' and vidrt.Video.__name__ == 'Video'; "
            "import vidrt.kernels, vidrt.attention; assert 'triton' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_generic_names_not_top_level(tmp_path):
    """Installed vidrt maps runtime/, kernels/, export/ into vidrt.*; none of them is a top-level package (a PyPI
    package of the same name, e.g. `kernels` that transformers depends on, may be, from outside this checkout)."""
    root = Path(__file__).resolve().parents[1]
    code = ("import importlib.util as u, pathlib; "
            "bad = [n for n in ('runtime', 'kernels', 'export') if (s := u.find_spec(n)) and "
            f"pathlib.Path(s.origin or '').resolve().parent.parent == pathlib.Path({str(root)!r})]; "
            "assert not bad, bad; import vidrt.kernels, vidrt.export, vidrt.models")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


@pytest.mark.parametrize("name", ["kernels", "export"])
def test_top_level_import_from_checkout_root_names_the_fix(name):
    """Python started in the checkout's root sees kernels/ and export/ as top-level packages; importing one that way
    (as transformers does with PyPI's `kernels`) fails with the cause and the fix, not an unrelated missing name."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}   # the working directory on sys.path
    r = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=root, capture_output=True, text=True, env=env)
    assert r.returncode != 0
    assert f"vidrt's {name}/ folder" in r.stderr and "python -P" in r.stderr


def test_drop_checkout_root(tmp_path, monkeypatch):
    """conftest.py's first call: the checkout's root leaves sys.path in every spelling ('' for the working directory,
    relative, absolute); other entries stay in order."""
    from vidrt.testing import drop_checkout_root

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", "a", str(tmp_path), ".", str(tmp_path / "a")])
    drop_checkout_root(tmp_path)
    assert sys.path == ["a", str(tmp_path / "a")]
