"""Flag and error parity of `sim-serve` with vLLM 0.33's `vllm serve`, table-driven.

Exit code 2 with argparse's message for anything argparse rejects; exit code 1 with vLLM's
message for what vLLM rejects while building its config. Start-up failures run in-process at
a time scale of 10^4, so each case takes milliseconds.
"""

from __future__ import annotations

import pytest

from tui_tuner.cli import main
from tui_tuner.core.vllm_flags import (
    FLAGS,
    batch_defaults,
    human_readable_int,
    lookup,
    removed,
)
from tui_tuner.sim.args import parse
from tui_tuner.sim.hardware import resolve
from tui_tuner.sim.profiles import get_profile

FAST = ("--sim-time-scale", "10000")

ARGPARSE_ERRORS = [
    # (flags, message vLLM 0.33 prints)
    (
        ["--max-num-seqs", "abc"],
        "vllm serve: error: argument --max-num-seqs: invalid int value: 'abc'",
    ),
    (["--dtype", "bogus"], "vllm serve: error: argument --dtype: invalid choice: 'bogus'"),
    (["--no-such-flag", "3"], "vllm: error: unrecognized arguments: --no-such-flag 3"),
    (["--max-seq-len-to-capture", "8192"], "unrecognized arguments: --max-seq-len-to-capture"),
    (["--max-num-partial-prefills", "2"], "unrecognized arguments: --max-num-partial-prefills"),
    (["--cuda-graph-sizes", "8"], "unrecognized arguments: --cuda-graph-sizes"),
    (["--swap-space", "4"], "unrecognized arguments: --swap-space"),
    (
        ["--gpu-memory-utilization", "high"],
        "argument --gpu-memory-utilization/--device-memory-utilization: invalid float value",
    ),
    (["--kv-cache-dtype", "fp7"], "argument --kv-cache-dtype: invalid choice: 'fp7'"),
    (["--max-num-batched-tokens", "2q"], "invalid human_readable_int value: '2q'"),
    (
        ["--compilation-config", "{not json"],
        "argument --compilation-config/-cc: invalid loads value",
    ),
    (["--performance-mode", "fast"], "argument --performance-mode: invalid choice: 'fast'"),
    (["--enforce-eager=yes"], "ignored explicit argument 'yes'"),
]


@pytest.mark.parametrize(("flags", "message"), ARGPARSE_ERRORS)
def test_argparse_errors_exit_2(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(["m", *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


CONFIG_ERRORS = [
    (["--max-num-seqs", "-5"], "max_num_seqs\n  Input should be greater than or equal to 1"),
    (["--max-num-seqs", "0"], "Input should be greater than or equal to 1"),
    (["--gpu-memory-utilization", "1.5"], "Input should be less than or equal to 1"),
    (["--gpu-memory-utilization", "0"], "Input should be greater than 0"),
    (["--block-size", "0"], "block_size\n  Input should be greater than 0"),
    (
        ["--max-num-seqs", "512", "--max-num-batched-tokens", "256"],
        "max_num_batched_tokens (256) must be greater than or equal to max_num_seqs (512).",
    ),
    (
        [
            "--disable-chunked-prefill",
            "--max-model-len",
            "8192",
            "--max-num-batched-tokens",
            "4096",
        ],
        "max_num_batched_tokens (4096) is smaller than max_model_len (8192).",
    ),
    (
        ["--max-model-len", "4096", "--long-prefill-token-threshold", "8192"],
        "long_prefill_token_threshold (8192) cannot be greater than the max_model_len (4096).",
    ),
    (
        ["--max-model-len", "200000"],
        "User-specified max_model_len (200000) is greater than the derived max_model_len",
    ),
    (
        ["-tp", "3"],
        "Total number of attention heads (32) must be divisible by tensor parallel size (3).",
    ),
    (["-tp", "2"], "World size (2) = tensor_parallel_size (2)"),
    (["--block-size", "8"], "ValueError: No common block size for 8."),
    (
        ["--sim-gpu-busy-gib", "20"],
        "Free memory on device cuda:0 (58.59/79.19 GiB) on startup is less than desired GPU memory "
        "utilization (0.92, 72.85 GiB)",
    ),
    (["--gpu-memory-utilization", "0.2"], "No available memory for the cache blocks"),
    (["--gpu-memory-utilization", "0.99"], "torch.OutOfMemoryError: CUDA out of memory."),
    (
        ["--kv-cache-memory-bytes", "256M", "--max-model-len", "4096"],
        "To serve at least one request with the model's max seq len (4096)",
    ),
    (["--sim-profile", "llama-70b-4xh100"], "Failed to load model - not enough GPU memory"),
]


@pytest.mark.parametrize(("flags", "message"), CONFIG_ERRORS)
def test_config_errors_exit_1(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sim-serve", "m", *flags, *FAST])
    out = capsys.readouterr()
    assert code == 1, out.out + out.err
    assert message in out.out + out.err


def test_kv_capacity_error_names_the_largest_length_that_fits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        main(
            ["sim-serve", "m", "--kv-cache-memory-bytes", "256M", "--max-model-len", "4096", *FAST]
        )
        == 1
    )
    out = capsys.readouterr().out
    # 256 MiB / 128 KiB per token (32 layers x 8 KV heads x 128 x 2 x bf16) = 2048 tokens
    assert "the estimated maximum model length is 2048" in out
    assert "RuntimeError: Engine core initialization failed" in out


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["-O0"], "optimization_level", 0),
        (["-O", "1"], "optimization_level", 1),
        (["--optimization-level", "3"], "optimization_level", 3),
        (["--max_num_seqs", "7"], "max_num_seqs", 7),
        (["--max-num-batched-tokens", "2k"], "max_num_batched_tokens", 2000),
        (["--max-num-batched-tokens", "2K"], "max_num_batched_tokens", 2048),
        (["--max-model-len", "32k"], "max_model_len", 32000),
        (["--enable-prefix-caching"], "enable_prefix_caching", True),
        (["--disable-prefix-caching"], "enable_prefix_caching", False),
        (["--no-enable-prefix-caching"], "enable_prefix_caching", False),
        (["--disable-chunked-prefill"], "enable_chunked_prefill", False),
        (["--no-async-scheduling"], "async_scheduling", False),
        (["--enforce-eager"], "enforce_eager", True),
        (["-tp", "4"], "tensor_parallel_size", 4),
        (["--device-memory-utilization", "0.8"], "gpu_memory_utilization", 0.8),
        (
            ["-cc.mode=3", "-cc.cudagraph_mode=FULL_DECODE_ONLY"],
            "compilation_config",
            {"mode": 3, "cudagraph_mode": "FULL_DECODE_ONLY"},
        ),
        (
            ["-cc", '{"cudagraph_capture_sizes": [1, 2, 4]}'],
            "compilation_config",
            {"cudagraph_capture_sizes": [1, 2, 4]},
        ),
        (["--cudagraph-capture-sizes", "1", "8", "16"], "cudagraph_capture_sizes", [1, 8, 16]),
        (["-q", "fp8"], "quantization", "fp8"),
        (["--max-model-len", "auto"], "max_model_len", -1),
        (["--max-model-len", "-1"], "max_model_len", -1),
    ],
)
def test_vllm_argument_forms(argv: list[str], dest: str, value: object) -> None:
    args, _, given = parse(["m", *argv])
    assert args.values[dest] == value
    assert dest in given


def test_flag_table_is_consistent() -> None:
    dests = [f.dest for f in FLAGS]
    assert len(dests) == len(set(dests))
    for flag in FLAGS:
        assert flag.name.startswith("--") and flag.help
        assert lookup(flag.dest) is flag and lookup(flag.name) is flag
    for name in ("max-num-seqs", "max_num_batched_tokens", "--gpu-memory-utilization", "-tp"):
        assert lookup(name) is not None


def test_removed_flags_say_what_replaced_them() -> None:
    graph = removed("cuda_graph_sizes")
    assert graph is not None and "--cudagraph-capture-sizes" in graph.explain()
    capture = removed("--max-seq-len-to-capture")
    assert capture is not None and "nothing replaces it" in capture.explain()
    assert removed("max_num_seqs") is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("2048", 2048), ("2k", 2000), ("2K", 2048), ("1.5k", 1500), ("1M", 2**20), ("-1", -1)],
)
def test_human_readable_int(text: str, value: int) -> None:
    assert human_readable_int(text) == value


@pytest.mark.parametrize("text", ["", "k", "2q", "1.5K", "1.0001k"])
def test_human_readable_int_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        human_readable_int(text)


def test_runtime_defaults_follow_vllm() -> None:
    h100 = batch_defaults(device_memory_gib=79.2, device_name="NVIDIA H100 80GB HBM3")
    assert (h100.max_num_seqs, h100.max_num_batched_tokens) == (1024, 8192)
    a100 = batch_defaults(device_memory_gib=79.2, device_name="NVIDIA A100-SXM4-80GB")
    assert (a100.max_num_seqs, a100.max_num_batched_tokens) == (256, 2048)
    b200 = batch_defaults(
        device_memory_gib=178, device_name="NVIDIA B200", performance_mode="throughput"
    )
    assert (b200.max_num_seqs, b200.max_num_batched_tokens) == (2048, 32768)
    cpu = batch_defaults(device_memory_gib=0, device_name="cpu", on_cpu=True)
    assert (cpu.max_num_seqs, cpu.max_num_batched_tokens) == (128, 2048)


def test_resolved_config_applies_vllm_defaults() -> None:
    cfg = resolve(parse(["m"])[0], get_profile("llama-8b-h100"))
    assert (cfg.max_num_seqs, cfg.max_num_batched_tokens, cfg.max_model_len) == (1024, 8192, 131072)
    assert cfg.prefix_caching and cfg.chunked_prefill and cfg.async_scheduling
    assert cfg.full_graphs and cfg.piecewise_graphs and max(cfg.capture_sizes) == 512
    eager = resolve(parse(["m", "--enforce-eager"])[0], get_profile("llama-8b-h100"))
    assert not eager.compiled and not eager.capture_sizes
    no_chunk = resolve(
        parse(["m", "--disable-chunked-prefill", "--max-model-len", "32768"])[0],
        get_profile("llama-8b-h100"),
    )
    assert no_chunk.max_num_batched_tokens == 32768
    small_card = resolve(parse(["m"])[0], get_profile("llama-7b-24gb"))
    assert (small_card.max_num_seqs, small_card.max_num_batched_tokens) == (256, 2048)


def test_api_key_never_reaches_the_log(capsys: pytest.CaptureFixture[str]) -> None:
    main(["sim-serve", "m", "--api-key", "sk-very-secret", "--max-num-seqs", "0", *FAST])
    out = capsys.readouterr()
    assert "sk-very-secret" not in out.out + out.err
    assert '"api_key": "***"' in out.out
