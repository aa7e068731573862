"""`import vidrt` stays light and exposes the public API; generic names are not importable at top level."""
import subprocess
import sys


def test_import_is_light_and_api_is_there():
    code = ("import sys, vidrt; heavy = [m for m in ('transformers', 'triton', 'diffusers', 'onnxruntime', "
            "'tensorrt', 'flash_attn') if m in sys.modules]; assert not heavy, heavy; "
            "assert vidrt.Pipeline.__name__ == 'Pipeline' and vidrt.Video.__name__ == 'Video'; "
            "import vidrt.kernels, vidrt.attention; assert 'triton' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_generic_names_not_top_level(tmp_path):
    """Installed vidrt maps runtime/, kernels/, export/ into vidrt.*; none of them is a top-level package."""
    code = ("import importlib.util as u; bad = [n for n in ('runtime', 'kernels', 'export') if u.find_spec(n)]; "
            "assert not bad, bad; import vidrt.kernels, vidrt.export, vidrt.models")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
