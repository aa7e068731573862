import json

import pytest
import torch

from vidrt.cli import main

# one tiny shape, 2 steps, 16 text tokens: seconds on one CPU thread
SMOKE_ARGS = ["--shapes", "16x16x5,32x32x5", "--steps", "2", "--warmup", "1", "--repeats", "3", "--text-len", "16",
              "--no-progress"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def smoke_run(tiny_wan, tmp_path_factory):
    """`vidrt bench` run once through the CLI on the tiny model with the diffusers baseline."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bench")
    paths = {k: out / f"r.{k}" for k in ("json", "md", "png")}
    rc = main(["bench", "--model", str(tiny_wan), *SMOKE_ARGS, "--baseline", "diffusers",
               "--json", str(paths["json"]), "--markdown", str(paths["md"]), "--plot", str(paths["png"])])
    return rc, json.loads(paths["json"].read_text()), paths
