"""vidrt.longclip: chunked causal generation with a KV cache, multi-shot streaming."""
