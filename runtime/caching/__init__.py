"""vidrt.caching: step caches (TeaCache, first-block, CFG) and the latency-target scheduler."""
