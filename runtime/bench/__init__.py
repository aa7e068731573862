"""vidrt.bench: `vidrt bench` — reproducible throughput/latency measurements, JSON schema, comparisons, plots."""
