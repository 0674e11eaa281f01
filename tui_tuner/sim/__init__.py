"""A simulated vLLM server: vLLM 0.33's flags, API, logs, metrics and failures, timed by a
continuous-batching model of a named GPU and model (docs/simulator.md). Imports only core."""
