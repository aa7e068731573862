"""Key names of the original Wan VAEs (``Wan2.1_VAE.pth``, wan/modules/vae.py; ``Wan2.2_VAE.pth``,
wan/modules/vae2_2.py) <-> diffusers names.

vidrt's :class:`~vidrt.models.vae.WanVAE` uses diffusers' AutoencoderKLWan names. The original 2.1
release flattens the decoder's blocks into one ``decoder.upsamples`` list (per stage:
num_res_blocks + 1 residual blocks, then a resample), so mapping decoder names needs the config's
``num_res_blocks``; everything else maps by name alone. Unlike diffusers' converter this works for
any Wan 2.1-style structure (not only num_res_blocks=2 with four stages), in both directions.
Wan 2.2's keeps one module per stage (``encoder.downsamples.I.downsamples.J``: residual blocks, then the
resample at J = num_res_blocks; the decoder's at J = num_res_blocks + 1), as diffusers' ``convert_vae_22`` reads it.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Mapping, Optional

import torch

from vidrt.errors import CheckpointError
from vidrt.models.vae import VAEConfig

__all__ = ["vae_key_from_original", "vae_key_to_original", "vae_key_renamer", "vae_state_from_original",
           "vae_state_to_original", "is_original_vae_state", "vae_config_from_original_state"]

# Inside a residual block: original nn.Sequential index <-> diffusers attribute.
_RES_FROM_ORIGINAL = [
    (r"^residual\.0\.gamma$", "norm1.gamma"),
    (r"^residual\.2\.(weight|bias)$", r"conv1.\1"),
    (r"^residual\.3\.gamma$", "norm2.gamma"),
    (r"^residual\.6\.(weight|bias)$", r"conv2.\1"),
    (r"^shortcut\.(weight|bias)$", r"conv_shortcut.\1"),
]
_RES_TO_ORIGINAL = [
    (r"^norm1\.gamma$", "residual.0.gamma"),
    (r"^conv1\.(weight|bias)$", r"residual.2.\1"),
    (r"^norm2\.gamma$", "residual.3.gamma"),
    (r"^conv2\.(weight|bias)$", r"residual.6.\1"),
    (r"^conv_shortcut\.(weight|bias)$", r"shortcut.\1"),
]
# Names that are the same on both sides: resample convs, time convs, attention layers.
_SAME = re.compile(r"^(resample\.1|time_conv|norm|to_qkv|proj)\.(weight|bias|gamma)$")


def _sub(rules: list[tuple[str, str]], rest: str) -> Optional[str]:
    for pat, repl in rules:
        if re.match(pat, rest):
            return re.sub(pat, repl, rest)
    return rest if _SAME.match(rest) else None


def _stride(config: Optional[VAEConfig]) -> int:
    """Entries per decoder stage in the original ``upsamples`` list."""
    return (config or VAEConfig()).num_res_blocks + 2


def _stage_key_from_original(key: str) -> Optional[str]:
    """Wan 2.2 (residual) stage keys: ``encoder.downsamples.I.downsamples.J.*`` / ``decoder.upsamples.I.upsamples.J.*``."""
    m = re.match(r"^(encoder\.downsamples|decoder\.upsamples)\.(\d+)\.(?:downsamples|upsamples)\.(\d+)\.(.+)$", key)
    if not m:
        return None
    side = "encoder.down_blocks" if m[1].startswith("encoder") else "decoder.up_blocks"
    res = _sub(_RES_FROM_ORIGINAL, m[4])
    if res is not None and m[4].startswith(("residual.", "shortcut.")):
        return f"{side}.{m[2]}.resnets.{m[3]}.{res}"
    if re.match(r"^(resample\.1|time_conv)\.(weight|bias)$", m[4]):
        return f"{side}.{m[2]}.{'downsampler' if side.startswith('encoder') else 'upsampler'}.{m[4]}"
    return key


def vae_key_from_original(key: str, config: Optional[VAEConfig] = None) -> str:
    """Original Wan VAE key -> diffusers/vidrt key (config: Wan 2.1 if None; Wan 2.2's names map by name alone).

    Unknown keys come back unchanged, so a strict loader reports them as unexpected.
    """
    staged = _stage_key_from_original(key)
    if staged is not None:
        return staged
    m = re.match(r"^conv([12])\.(weight|bias)$", key)
    if m:
        return f"{'quant_conv' if m[1] == '1' else 'post_quant_conv'}.{m[2]}"
    m = re.match(r"^(encoder|decoder)\.(conv1|head\.0|head\.2)\.(weight|bias|gamma)$", key)
    if m:
        part = {"conv1": "conv_in", "head.0": "norm_out", "head.2": "conv_out"}[m[2]]
        return f"{m[1]}.{part}.{m[3]}"
    m = re.match(r"^(encoder|decoder)\.middle\.(\d+)\.(.+)$", key)
    if m:
        i = int(m[2])
        new = _sub(_RES_FROM_ORIGINAL, m[3]) if i in (0, 2) else _sub([], m[3]) if i == 1 else None
        if new is not None:
            return f"{m[1]}.mid_block.resnets.{i // 2}.{new}" if i != 1 else f"{m[1]}.mid_block.attentions.0.{new}"
        return key
    m = re.match(r"^encoder\.downsamples\.(\d+)\.(.+)$", key)
    if m:
        new = _sub(_RES_FROM_ORIGINAL, m[2])
        return f"encoder.down_blocks.{m[1]}.{new}" if new is not None else key
    m = re.match(r"^decoder\.upsamples\.(\d+)\.(.+)$", key)
    if m:
        stage, pos = divmod(int(m[1]), _stride(config))
        new = _sub(_RES_FROM_ORIGINAL, m[2])
        if new is None:
            return key
        if pos == _stride(config) - 1:
            return f"decoder.up_blocks.{stage}.upsamplers.0.{new}"
        return f"decoder.up_blocks.{stage}.resnets.{pos}.{new}"
    return key


def vae_key_to_original(key: str, config: Optional[VAEConfig] = None) -> str:
    """diffusers/vidrt VAE key -> original Wan key (config: Wan 2.1 if None); KeyError if it has none."""
    m = re.match(r"^(quant_conv|post_quant_conv)\.(weight|bias)$", key)
    if m:
        return f"{'conv1' if m[1] == 'quant_conv' else 'conv2'}.{m[2]}"
    m = re.match(r"^(encoder|decoder)\.(conv_in|norm_out|conv_out)\.(weight|bias|gamma)$", key)
    if m:
        part = {"conv_in": "conv1", "norm_out": "head.0", "conv_out": "head.2"}[m[2]]
        return f"{m[1]}.{part}.{m[3]}"
    new = None
    cfg = config or VAEConfig()
    m = re.match(r"^(encoder\.down_blocks|decoder\.up_blocks)\.(\d+)\.(resnets\.(\d+)|downsampler|upsampler)\.(.+)$",
                 key)
    if cfg.is_residual and m:
        side = "encoder.downsamples" if m[1].startswith("encoder") else "decoder.upsamples"
        inner = side.split(".")[1]
        if m[4] is not None:
            rest = _sub(_RES_TO_ORIGINAL, m[5])
            new = f"{side}.{m[2]}.{inner}.{m[4]}.{rest}" if rest is not None else None
        elif re.match(r"^(resample\.1|time_conv)\.(weight|bias)$", m[5]):
            at = cfg.num_res_blocks + (0 if side.startswith("encoder") else 1)   # after the stage's residual blocks
            new = f"{side}.{m[2]}.{inner}.{at}.{m[5]}"
        if new is None:
            raise KeyError(f"no original Wan VAE name for {key!r}")
        return new
    m = re.match(r"^(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)$", key)
    if m:
        rest = _sub(_RES_TO_ORIGINAL, m[4]) if m[2] == "resnets" else _sub([], m[4])
        index = 2 * int(m[3]) if m[2] == "resnets" else 1
        new = f"{m[1]}.middle.{index}.{rest}" if rest is not None else None
    m = re.match(r"^encoder\.down_blocks\.(\d+)\.(.+)$", key)
    if m:
        rest = _sub(_RES_TO_ORIGINAL, m[2])
        new = f"encoder.downsamples.{m[1]}.{rest}" if rest is not None else None
    m = re.match(r"^decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.+)$", key)
    if m:
        rest = _sub(_RES_TO_ORIGINAL, m[4])
        pos = int(m[3]) if m[3] is not None else _stride(config) - 1
        new = f"decoder.upsamples.{int(m[1]) * _stride(config) + pos}.{rest}" if rest is not None else None
    if new is None:
        raise KeyError(f"no original Wan VAE name for {key!r}")
    return new


def vae_key_renamer(config: Optional[VAEConfig] = None) -> Callable[[str], str]:
    """A one-argument ``rename`` for loaders: original key -> vidrt key under ``config``."""
    return lambda key: vae_key_from_original(key, config)


def vae_state_from_original(state: Mapping[str, torch.Tensor], config: Optional[VAEConfig] = None,
                            ) -> dict[str, torch.Tensor]:
    """Rename a whole original-layout state dict; CheckpointError naming any key that has no vidrt name."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key in state.keys():
        new = vae_key_from_original(key, config)
        if new == key:
            unknown.append(key)
        out[new] = state[key]
    if unknown:
        raise CheckpointError(f"{len(unknown)} keys are not original Wan VAE names: {', '.join(unknown[:8])}"
                              f"{' ...' if len(unknown) > 8 else ''}; is this a diffusers VAE (load it as such) "
                              "or from another VAE family?")
    return out


def vae_state_to_original(state: Mapping[str, torch.Tensor], config: Optional[VAEConfig] = None,
                          ) -> dict[str, torch.Tensor]:
    """Rename a diffusers/vidrt VAE state dict to the original Wan layout (e.g. to write test checkpoints)."""
    return {vae_key_to_original(k, config): v for k, v in state.items()}


def is_original_vae_state(keys: Iterable[str]) -> bool:
    """True for original Wan VAE names (``encoder.downsamples.*``, ``decoder.upsamples.*``, ``conv1.*``)."""
    return any(k.startswith(("encoder.downsamples.", "decoder.upsamples.", "decoder.middle.")) for k in keys)


def vae_config_from_original_state(state: Mapping[str, torch.Tensor], **overrides) -> VAEConfig:
    """Read the structure (base_dim, z_dim, dim_mult, num_res_blocks, temperal_downsample) off the
    tensor shapes of an original-layout state dict; ``overrides`` fill the rest (e.g. latents_mean/std,
    which the .pth does not hold and default to Wan 2.1's 16 values)."""
    try:
        base_dim = state["encoder.conv1.weight"].shape[0]
        z_dim = state["conv2.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"not an original Wan VAE state dict: missing {exc}") from None
    if any(k.startswith("encoder.downsamples.0.downsamples.") for k in state.keys()):
        return _residual_config(state, base_dim, z_dim, overrides)
    blocks: dict[int, set[str]] = {}
    for key in state.keys():
        m = re.match(r"^encoder\.downsamples\.(\d+)\.(residual|shortcut|resample|time_conv|to_qkv)", key)
        if m:
            blocks.setdefault(int(m[1]), set()).add(m[2])
    dim_mult, temporal, res_in_stage, num_res_blocks = [], [], 0, None
    for i in sorted(blocks):
        kinds = blocks[i]
        if "resample" in kinds:
            temporal.append("time_conv" in kinds)
            num_res_blocks = num_res_blocks or res_in_stage
            res_in_stage = 0
        elif "residual" in kinds:
            if res_in_stage == 0:
                dim_mult.append(state[f"encoder.downsamples.{i}.residual.2.weight"].shape[0] // base_dim)
            res_in_stage += 1
    num_res_blocks = num_res_blocks or res_in_stage
    found = dict(base_dim=base_dim, z_dim=z_dim, dim_mult=dim_mult, num_res_blocks=num_res_blocks,
                 temperal_downsample=temporal)
    return VAEConfig(**{**found, **overrides})


def _residual_config(state: Mapping[str, torch.Tensor], base_dim: int, z_dim: int, overrides: dict) -> VAEConfig:
    """Wan 2.2's structure off an original ``Wan2.2_VAE.pth`` (one module per stage); its 48-channel latent
    statistics are the release's unless ``overrides`` say otherwise."""
    from vidrt.models.vae import WAN22_LATENTS_MEAN, WAN22_LATENTS_STD

    stages: dict[int, dict[int, set[str]]] = {}
    for key in state.keys():
        m = re.match(r"^encoder\.downsamples\.(\d+)\.downsamples\.(\d+)\.(residual|resample|time_conv)", key)
        if m:
            stages.setdefault(int(m[1]), {}).setdefault(int(m[2]), set()).add(m[3])
    order = sorted(stages)
    try:
        dim_mult = [state[f"encoder.downsamples.{i}.downsamples.0.residual.2.weight"].shape[0] // base_dim
                    for i in order]
        head = state["decoder.head.2.weight"]
    except KeyError as exc:
        raise CheckpointError(f"not an original Wan 2.2 VAE state dict: missing {exc}") from None
    cin = state["encoder.conv1.weight"].shape[1]
    patch = round((cin / 3) ** 0.5)
    if cin != 3 * patch * patch:
        raise CheckpointError(f"Wan 2.2 VAE: encoder.conv1 takes {cin} channels, not 3 x p^2 for a p x p patchify of "
                              "RGB video; the file is not a Wan2.2_VAE.pth (or is corrupt)")
    dec = head.shape[1] // dim_mult[0]
    found: dict = dict(base_dim=base_dim, z_dim=z_dim, dim_mult=dim_mult,
                       num_res_blocks=sum("residual" in kinds for kinds in stages[order[0]].values()),
                       temperal_downsample=[any("time_conv" in kinds for kinds in stages[i].values())
                                            for i in order[:-1]],
                       is_residual=True, patch_size=patch if patch > 1 else None, in_channels=cin,
                       out_channels=head.shape[0], decoder_base_dim=dec if dec != base_dim else None)
    if z_dim == len(WAN22_LATENTS_MEAN):
        found.update(latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD)
    return VAEConfig(**{**found, **overrides})
