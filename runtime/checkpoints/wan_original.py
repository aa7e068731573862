"""Key names of the original Wan 2.1 release (wan/modules/model.py, t5.py) <-> vidrt/diffusers names."""
from __future__ import annotations

import re
from typing import Optional

# Original DiT name pattern -> diffusers/vidrt name. Order matters only for readability; patterns are anchored.
_DIT_RULES: list[tuple[str, str]] = [
    (r"^patch_embedding\.(weight|bias)$", r"patch_embedding.\1"),
    (r"^text_embedding\.0\.(weight|bias)$", r"condition_embedder.text_embedder.linear_1.\1"),
    (r"^text_embedding\.2\.(weight|bias)$", r"condition_embedder.text_embedder.linear_2.\1"),
    (r"^time_embedding\.0\.(weight|bias)$", r"condition_embedder.time_embedder.linear_1.\1"),
    (r"^time_embedding\.2\.(weight|bias)$", r"condition_embedder.time_embedder.linear_2.\1"),
    (r"^time_projection\.1\.(weight|bias)$", r"condition_embedder.time_proj.\1"),
    (r"^blocks\.(\d+)\.self_attn\.([qkv])\.(weight|bias)$", r"blocks.\1.attn1.to_\2.\3"),
    (r"^blocks\.(\d+)\.self_attn\.o\.(weight|bias)$", r"blocks.\1.attn1.to_out.0.\2"),
    (r"^blocks\.(\d+)\.self_attn\.norm_([qk])\.weight$", r"blocks.\1.attn1.norm_\2.weight"),
    (r"^blocks\.(\d+)\.cross_attn\.([qkv])\.(weight|bias)$", r"blocks.\1.attn2.to_\2.\3"),
    (r"^blocks\.(\d+)\.cross_attn\.o\.(weight|bias)$", r"blocks.\1.attn2.to_out.0.\2"),
    (r"^blocks\.(\d+)\.cross_attn\.norm_([qk])\.weight$", r"blocks.\1.attn2.norm_\2.weight"),
    (r"^blocks\.(\d+)\.norm3\.(weight|bias)$", r"blocks.\1.norm2.\2"),  # Wan's norm3 is the cross-attn norm
    (r"^blocks\.(\d+)\.ffn\.0\.(weight|bias)$", r"blocks.\1.ffn.net.0.proj.\2"),
    (r"^blocks\.(\d+)\.ffn\.2\.(weight|bias)$", r"blocks.\1.ffn.net.2.\2"),
    (r"^blocks\.(\d+)\.modulation$", r"blocks.\1.scale_shift_table"),
    (r"^head\.head\.(weight|bias)$", r"proj_out.\1"),
    (r"^head\.modulation$", r"scale_shift_table"),
]
_DIT_COMPILED = [(re.compile(a), b) for a, b in _DIT_RULES]


def dit_key_from_original(key: str) -> Optional[str]:
    """Original Wan DiT key -> vidrt key; unknown keys are returned unchanged (reported as unexpected)."""
    key = key.removeprefix("model.diffusion_model.")
    for pat, repl in _DIT_COMPILED:
        if pat.match(key):
            return pat.sub(repl, key)
    return key


def dit_key_to_original(key: str) -> str:
    """vidrt key -> original Wan key (for writing original-layout checkpoints, e.g. in tests)."""
    for a, b in _DIT_RULES:
        pat = re.compile("^" + re.escape(b).replace(r"\\1", "(?P<g1>[^.]+)").replace(r"\\2", "(?P<g2>[^.]+)")
                         .replace(r"\\3", "(?P<g3>[^.]+)") + "$")
        m = pat.match(key)
        if m:
            out = a.strip("^$")
            groups = [m.group(g) for g in ("g1", "g2", "g3") if g in m.groupdict()]
            # rebuild the original name from the capture groups, in order
            for g in groups:
                out = re.sub(r"\((?:[^()]|\([^()]*\))*\)", g, out, count=1)
            return out.replace("\\.", ".")
    raise KeyError(f"no original Wan name for {key}")


def is_original_dit_state(keys) -> bool:
    keys = list(keys)
    return any(k.removeprefix("model.diffusion_model.").startswith(("time_embedding.", "head.head")) for k in keys)


# --- UMT5 text encoder: Wan's T5Encoder (t5.py) -> transformers UMT5EncoderModel
_T5_RULES: list[tuple[str, str]] = [
    (r"^token_embedding\.weight$", r"shared.weight"),
    (r"^blocks\.(\d+)\.attn\.([qkvo])\.weight$", r"encoder.block.\1.layer.0.SelfAttention.\2.weight"),
    (r"^blocks\.(\d+)\.norm1\.weight$", r"encoder.block.\1.layer.0.layer_norm.weight"),
    (r"^blocks\.(\d+)\.pos_embedding\.embedding\.weight$",
     r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.weight"),
    (r"^blocks\.(\d+)\.norm2\.weight$", r"encoder.block.\1.layer.1.layer_norm.weight"),
    (r"^blocks\.(\d+)\.ffn\.gate\.0\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wi_0.weight"),
    (r"^blocks\.(\d+)\.ffn\.fc1\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wi_1.weight"),
    (r"^blocks\.(\d+)\.ffn\.fc2\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wo.weight"),
    (r"^norm\.weight$", r"encoder.final_layer_norm.weight"),
]
_T5_COMPILED = [(re.compile(a), b) for a, b in _T5_RULES]


def t5_key_from_original(key: str) -> Optional[str]:
    for pat, repl in _T5_COMPILED:
        if pat.match(key):
            return pat.sub(repl, key)
    return key


def t5_config_from_original_state(state) -> dict:
    """Infer a UMT5 config (transformers names) from Wan T5 encoder tensor shapes."""
    keys = list(state.keys())
    n_layers = 1 + max(int(k.split(".")[1]) for k in keys if k.startswith("blocks."))
    vocab, d_model = state["token_embedding.weight"].shape
    inner = state["blocks.0.attn.q.weight"].shape[0]
    buckets, heads = state["blocks.0.pos_embedding.embedding.weight"].shape
    d_ff = state["blocks.0.ffn.fc1.weight"].shape[0]
    return dict(vocab_size=vocab, d_model=d_model, d_kv=inner // heads, d_ff=d_ff, num_layers=n_layers,
                num_heads=heads, relative_attention_num_buckets=buckets, relative_attention_max_distance=128,
                feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0,
                is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False)
