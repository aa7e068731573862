"""Random Wan pipelines built with diffusers (the oracle) and saved as real checkpoint folders.

For tests and benchmarks: needs the `test` or `bench` extra (diffusers). Any size, from tiny to Wan 1.3B.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Top-level imports stay free of transformers / diffusers: conftests import this module first to call
# drop_checkout_root before anything imports them (diffusers is imported inside make_tiny_wan).
import torch

WORDS = "a red green blue circle square moves left right up down on black gray background and the".split()
# small, fast generation settings for the tiny random folders of make_tiny_wan (32x32, 3 steps, 16 text positions)
TINY_GEN = dict(height=32, width=32, steps=3, guidance=3.0, max_sequence_length=16)


def drop_checkout_root(root: Path) -> None:
    """Remove a vidrt checkout's root from sys.path (call first thing in a conftest.py).

    `python -m pytest` puts the working directory first on sys.path; from a checkout's root that makes kernels/ and
    export/ (vidrt.kernels, vidrt.export) importable as top-level `kernels` / `export`, shadowing installed packages
    of those names (transformers 5.25 imports PyPI's `kernels`). vidrt imports through its installed mapping."""
    root = Path(root).resolve()
    sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != root]


def make_tiny_wan(path: Path, *, patch=(1, 2, 2), heads: int = 2, head_dim: int = 12, layers: int = 2,
                  text_dim: int = 16, seed: int = 0, flow_shift: float = 3.0, scheduler: str = "unipc",
                  ffn_dim: int = 32, vae_base_dim: int = 3, text_layers: int = 2) -> Path:
    """Save a random diffusers WanPipeline folder at ``path`` (tiny by default) and return it."""
    from diffusers import (AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler,
                           WanPipeline, WanTransformer3DModel)
    from transformers import UMT5Config, UMT5EncoderModel

    from vidrt.models.text import build_word_tokenizer

    path = Path(path)

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=vae_base_dim, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(
        patch_size=patch, num_attention_heads=heads, attention_head_dim=head_dim, in_channels=16, out_channels=16,
        text_dim=text_dim, freq_dim=32 if text_dim < 64 else 256, ffn_dim=ffn_dim, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=1024 if text_dim >= 64 else 32)
    tok = build_word_tokenizer(WORDS)
    te = UMT5EncoderModel(UMT5Config(vocab_size=len(tok), d_model=text_dim, d_kv=8, d_ff=32, num_layers=text_layers,
                                     num_heads=2, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                                     dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    if scheduler == "unipc":
        sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=flow_shift)
    else:
        sched = FlowMatchEulerDiscreteScheduler(shift=flow_shift)
    pipe = WanPipeline(tokenizer=tok, text_encoder=te.eval(), vae=vae.eval(), transformer=transformer.eval(),
                       scheduler=sched)
    pipe.save_pretrained(str(path))
    return Path(path)


def load_script(path: str | Path):
    """Import a repository script (tools/, benchmarks/: not part of the package) as a module, by path."""
    import importlib.util
    import sys

    path = Path(path)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod
    spec.loader.exec_module(mod)
    return mod
