"""UMT5 text encoder (transformers) + tokenizer, producing Wan's zero-padded context tokens."""
from __future__ import annotations

import html
import logging
import re
from typing import Sequence

import torch

logger = logging.getLogger(__name__)


def clean_prompt(text: str) -> str:
    """HTML-unescape and collapse whitespace, as diffusers' Wan pipeline does before tokenising."""
    try:
        import ftfy  # type: ignore[import-not-found]

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class TextEncoder:
    """Prompts -> (B, max_length, text_dim) hidden states, each zero-padded after its own tokens.

    ``model`` is a transformers ``UMT5EncoderModel`` (or any encoder returning last_hidden_state);
    ``tokenizer`` a transformers tokenizer loaded from the checkpoint folder.
    """

    def __init__(self, tokenizer, model: torch.nn.Module, max_length: int = 512):
        self.tokenizer = tokenizer
        self.model = model.eval()
        self.max_length = int(max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], max_length: int | None = None) -> torch.Tensor:
        max_length = int(max_length or self.max_length)
        prompts = [clean_prompt(p) for p in prompts]
        full = self.tokenizer(prompts, add_special_tokens=True, truncation=False)["input_ids"]
        for p, ids in zip(prompts, full):
            if len(ids) > max_length:
                logger.warning("prompt has %d tokens, more than the text encoder's limit of %d; truncated "
                               "(shorten the prompt to keep all of it): %.60s...", len(ids), max_length, p)
        tok = self.tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids, mask = tok.input_ids.to(self.device), tok.attention_mask.to(self.device)
        hidden = self.model(ids, mask).last_hidden_state
        lens = mask.gt(0).sum(1)
        keep = torch.arange(max_length, device=self.device)[None, :] < lens[:, None]
        return hidden * keep[..., None].to(hidden.dtype)
