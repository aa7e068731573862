"""vidrt.longclip: long, multi-shot clips streamed chunk by chunk.

Causal models (``num_frame_per_block > 0``) denoise chunk-wise with a KV cache of the clean past
(a preallocated ring buffer with attention sinks: flat memory for any length); bidirectional
models fall back to sliding windows. ``Pipeline.stream`` is the entry point; ``vidrt stream`` (and
``vidrt generate --shots``) the command. See docs/longclip.md.
"""
from vidrt.longclip.kv_cache import KVCache, KVCacheConfig, LayerCache
from vidrt.longclip.shots import Shot, as_shots, check_references, load_shots, plan_shots
from vidrt.longclip.stream import StreamPart, StreamSummary, save_stream, stream
from vidrt.longclip.variant import make_causal_variant

__all__ = ["KVCache", "KVCacheConfig", "LayerCache", "Shot", "as_shots", "check_references", "load_shots",
           "plan_shots", "StreamPart", "StreamSummary", "save_stream", "stream", "make_causal_variant"]
