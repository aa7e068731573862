import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_wan(tmp_path_factory):
    from vidrt.testing import make_tiny_wan

    torch.set_num_threads(1)
    return make_tiny_wan(tmp_path_factory.mktemp("quant_wan") / "tiny")
