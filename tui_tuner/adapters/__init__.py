"""The only code that starts processes, opens sockets or loads NVML: the `vllm serve` life cycle
(vllm_server), GuideLLM (guidellm/) and process-group handling (processes)."""
