import pytest


@pytest.fixture(scope="session")
def onnx_dir(tiny_wan, tmp_path_factory):
    pytest.importorskip("onnx")
    from vidrt.export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "tiny_onnx"
    export_onnx(tiny_wan, out)
    return out
