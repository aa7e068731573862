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
                  ffn_dim: int = 32, vae_base_dim: int = 3, text_layers: int = 2,
                  boundary_ratio: float | None = None, wan22_vae: bool = False) -> Path:
    """Save a random diffusers WanPipeline folder at ``path`` (tiny by default) and return it.

    ``boundary_ratio``: a two-expert (Wan 2.2 A14B-style) folder, with a second random DiT as transformer_2.
    ``wan22_vae``: a Wan 2.2 TI2V-5B-style folder: residual VAE with a 2x2 patchify (x16 space) and
    ``expand_timesteps`` (per-token timesteps) in the pipeline."""
    from diffusers import (AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler,
                           WanPipeline, WanTransformer3DModel)
    from transformers import UMT5Config, UMT5EncoderModel

    from vidrt.models.text import build_word_tokenizer

    path = Path(path)

    torch.manual_seed(seed)
    if wan22_vae:
        vae = AutoencoderKLWan(base_dim=8, decoder_base_dim=12, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                               temperal_downsample=[False, True, True], is_residual=True, patch_size=2,
                               in_channels=12, out_channels=12, scale_factor_spatial=16)
    else:
        vae = AutoencoderKLWan(base_dim=vae_base_dim, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True])
    def dit():
        return WanTransformer3DModel(
            patch_size=patch, num_attention_heads=heads, attention_head_dim=head_dim, in_channels=16, out_channels=16,
            text_dim=text_dim, freq_dim=32 if text_dim < 64 else 256, ffn_dim=ffn_dim, num_layers=layers,
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=1024 if text_dim >= 64 else 32)

    transformer = dit()
    tok = build_word_tokenizer(WORDS)
    te = UMT5EncoderModel(UMT5Config(vocab_size=len(tok), d_model=text_dim, d_kv=8, d_ff=32, num_layers=text_layers,
                                     num_heads=2, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                                     dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    if scheduler == "unipc":
        sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=flow_shift)
    else:
        sched = FlowMatchEulerDiscreteScheduler(shift=flow_shift)
    experts = {"expand_timesteps": True} if wan22_vae else {}
    if boundary_ratio is not None:
        torch.manual_seed(seed + 1)
        experts.update(transformer_2=dit().eval(), boundary_ratio=boundary_ratio)
    pipe = WanPipeline(tokenizer=tok, text_encoder=te.eval(), vae=vae.eval(), transformer=transformer.eval(),
                       scheduler=sched, **experts)
    pipe.save_pretrained(str(path))
    return Path(path)


def _t5_key_to_original(key: str) -> str:
    """transformers UMT5 encoder key -> Wan's T5Encoder key (t5.py)."""
    import re

    fixed = {"shared.weight": "token_embedding.weight", "encoder.final_layer_norm.weight": "norm.weight"}
    if key in fixed:
        return fixed[key]
    n, layer, rest = re.match(r"encoder\.block\.(\d+)\.layer\.(\d)\.(.*)$", key).groups()
    table = {"SelfAttention.q.weight": "attn.q.weight", "SelfAttention.k.weight": "attn.k.weight",
             "SelfAttention.v.weight": "attn.v.weight", "SelfAttention.o.weight": "attn.o.weight",
             "SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
             "layer_norm.weight": "norm1.weight" if layer == "0" else "norm2.weight",
             "DenseReluDense.wi_0.weight": "ffn.gate.0.weight", "DenseReluDense.wi_1.weight": "ffn.fc1.weight",
             "DenseReluDense.wo.weight": "ffn.fc2.weight"}
    return f"blocks.{n}.{table[rest]}"


def _write_original_dit(src: Path, dst: Path, model_type: str = "t2v") -> None:
    """A diffusers transformer folder as an original Wan DiT folder: config.json (Wan names) + two shards."""
    import json

    from safetensors.torch import load_file, save_file

    from vidrt.checkpoints.wan_original import dit_key_to_original

    dst.mkdir(parents=True)
    tcfg = json.loads((src / "config.json").read_text())
    heads, hd = tcfg["num_attention_heads"], tcfg["attention_head_dim"]
    (dst / "config.json").write_text(json.dumps({
        "model_type": model_type, "dim": heads * hd, "num_heads": heads, "num_layers": tcfg["num_layers"],
        "ffn_dim": tcfg["ffn_dim"], "freq_dim": tcfg["freq_dim"], "in_dim": tcfg["in_channels"],
        "out_dim": tcfg["out_channels"], "text_dim": tcfg["text_dim"], "patch_size": tcfg["patch_size"],
        "eps": tcfg["eps"], "qk_norm": True, "cross_attn_norm": True, "text_len": 512}))
    dit = {dit_key_to_original(k): v for k, v in load_file(src / "diffusion_pytorch_model.safetensors").items()}
    keys = sorted(dit)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: dit[k].contiguous() for k in ks}, dst / name)
        weight_map.update({k: name for k in ks})
    (dst / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def to_original_layout(src: Path, dst: Path) -> Path:
    """Rewrite a diffusers Wan folder in the original Wan release layout: sharded DiT, .pth VAE and T5, tokenizer
    in google/umt5-xxl/. A two-expert folder becomes Wan 2.2 A14B's layout (high_noise_model/, low_noise_model/), a
    TI2V-style one (expand_timesteps, residual VAE) TI2V-5B's (model_type "ti2v", Wan2.2_VAE.pth)."""
    import json
    import shutil

    from safetensors.torch import load_file

    from vidrt.checkpoints.wan_vae_keys import vae_state_to_original
    from vidrt.models.vae import VAEConfig

    src, dst = Path(src), Path(dst)
    ti2v = bool(json.loads((src / "model_index.json").read_text()).get("expand_timesteps"))
    if (src / "transformer_2").is_dir():
        dst.mkdir(parents=True)
        _write_original_dit(src / "transformer", dst / "high_noise_model")
        _write_original_dit(src / "transformer_2", dst / "low_noise_model")
    else:
        _write_original_dit(src / "transformer", dst, "ti2v" if ti2v else "t2v")
    vcfg = json.loads((src / "vae" / "config.json").read_text())
    (dst / "vae_config.json").write_text(json.dumps(vcfg))
    vae = vae_state_to_original(load_file(src / "vae" / "diffusion_pytorch_model.safetensors"),
                                VAEConfig.from_dict(vcfg))
    torch.save(dict(vae), dst / ("Wan2.2_VAE.pth" if vcfg.get("is_residual") else "Wan2.1_VAE.pth"))
    t5 = load_file(next((src / "text_encoder").glob("*.safetensors")))
    torch.save({_t5_key_to_original(k): v for k, v in t5.items() if k != "encoder.embed_tokens.weight"},
               dst / "models_t5_umt5-xxl-enc-bf16.pth")
    shutil.copytree(src / "tokenizer", dst / "google" / "umt5-xxl")
    return dst


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
