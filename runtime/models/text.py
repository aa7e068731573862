"""UMT5 text encoder (transformers) + tokenizer, producing Wan's zero-padded context tokens."""
from __future__ import annotations

import html
import logging
import re
from typing import Sequence

import torch

logger = logging.getLogger(__name__)

# Value types of the text_encoder/config.json keys that shape the UMT5 encoder (checked when loading).
UMT5_CONFIG_TYPES = {"vocab_size": int, "d_model": int, "d_kv": int, "d_ff": int, "num_layers": int, "num_heads": int,
                     "relative_attention_num_buckets": int, "relative_attention_max_distance": int,
                     "layer_norm_epsilon": float, "dropout_rate": float, "feed_forward_proj": str}


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
            self._warn_unknown_words(p, ids)
        tok = self.tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids, mask = tok.input_ids.to(self.device), tok.attention_mask.to(self.device)
        hidden = self.model(ids, mask).last_hidden_state
        lens = mask.gt(0).sum(1)
        keep = torch.arange(max_length, device=self.device)[None, :] < lens[:, None]
        return hidden * keep[..., None].to(hidden.dtype)

    def _warn_unknown_words(self, prompt: str, ids: Sequence[int]) -> None:
        """Words the tokenizer maps to its unknown token carry no meaning for the model: say which (a word-level
        vocabulary such as the embedded model's knows only its grammar, so a typo would silently be ignored)."""
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if unk is None or unk not in ids:
            return
        try:
            spans = self.tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
            words = sorted({prompt[a:b] for i, (a, b) in zip(ids, spans) if i == unk and b > a})
        except (NotImplementedError, TypeError, ValueError, KeyError):  # slow tokenizers give no offsets
            words = []
        named = ", ".join(repr(w) for w in words) if words else f"{list(ids).count(unk)} token(s)"
        logger.warning("prompt words not in the tokenizer's vocabulary: %s; they are encoded as the unknown token "
                       "and mean nothing to the model (the embedded default model knows only the vidrt.world "
                       "prompt grammar, README 'Prompt grammar'): %.60s", named, prompt)


def build_word_tokenizer(words: Sequence[str], model_max_length: int = 512):
    """A T5-style word-level tokenizer (pad=0, eos=1, unk=2; lower-cased; '</s>' appended) over ``words``.

    Used by the embedded model (the world grammar's vocabulary) and by tests; saved with
    ``save_pretrained`` it loads back through ``AutoTokenizer`` in vidrt and in diffusers alike.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in words:
        vocab.setdefault(w.lower(), len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=model_max_length)
