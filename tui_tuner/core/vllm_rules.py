"""vLLM 0.33's checks that run after argument parsing, with vLLM's own messages.

argparse catches unknown flags, bad types and bad choices (exit code 2). The checks here are the
ones vLLM makes later, while building its config (exit code 1): pydantic field bounds and the
cross-field ValueErrors of `config/scheduler.py` and `config/model.py`. The simulated server fails
with these messages, and the study configuration uses them to reject a candidate before launching.
"""

from __future__ import annotations

from dataclasses import dataclass

from tui_tuner.core.vllm_flags import FLAGS, Flag


@dataclass(frozen=True)
class Violation:
    """A configuration vLLM refuses. `exception` is the Python exception vLLM raises."""

    dest: str
    message: str
    exception: str = "ValueError"

    def render(self) -> str:
        return f"{self.exception}: {self.message}"


def _bound_violation(flag: Flag, value: float, config_class: str) -> Violation | None:
    checks: list[tuple[float | None, bool, str, str]] = [
        (
            flag.ge,
            flag.ge is not None and value < flag.ge,
            "greater than or equal to",
            "greater_than_equal",
        ),
        (flag.gt, flag.gt is not None and value <= flag.gt, "greater than", "greater_than"),
        (
            flag.le,
            flag.le is not None and value > flag.le,
            "less than or equal to",
            "less_than_equal",
        ),
    ]
    for bound, broken, words, kind in checks:
        if bound is not None and broken:
            shown = int(bound) if float(bound).is_integer() and flag.kind != "float" else bound
            message = (
                f"1 validation error for {config_class}\n{flag.dest}\n"
                f"  Input should be {words} {shown} "
                f"[type={kind}, input_value={value!r}, input_type={type(value).__name__}]"
            )
            return Violation(flag.dest, message, "pydantic_core._pydantic_core.ValidationError")
    return None


def bound_violations(values: dict[str, object]) -> list[Violation]:
    """Pydantic `Field(ge=, gt=, le=)` checks on each flag that was given."""
    found = []
    for flag in FLAGS:
        value = values.get(flag.dest)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if flag.dest == "max_model_len" and value == -1:
            continue
        violation = _bound_violation(flag, value, flag.config_class or "EngineArgs")
        if violation:
            found.append(violation)
    return found


def cross_field_violations(
    *,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    max_model_len: int,
    chunked_prefill: bool,
    long_prefill_token_threshold: int,
    derived_max_model_len: int,
    user_set_max_model_len: bool,
    user_set_batched_tokens: bool,
    allow_long_max_model_len: bool,
) -> list[Violation]:
    """The ValueErrors of vLLM's SchedulerConfig and ModelConfig, in the order vLLM raises them."""
    found: list[Violation] = []
    too_long = user_set_max_model_len and max_model_len > derived_max_model_len
    if too_long and not allow_long_max_model_len:
        msg = (
            f"User-specified max_model_len ({max_model_len}) is greater than the derived "
            f"max_model_len (max_position_embeddings={derived_max_model_len} or "
            "model_max_length=None in model's config.json). To allow overriding this "
            "maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. "
            "VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with extreme caution. If the model "
            "uses relative position encoding (RoPE), positions exceeding derived_max_model_len "
            "lead to nan. If the model uses absolute position encoding, positions exceeding "
            "derived_max_model_len will cause a CUDA array out-of-bounds error."
        )
        found.append(Violation("max_model_len", msg))
    if not chunked_prefill and user_set_batched_tokens and max_num_batched_tokens < max_model_len:
        msg = (
            f"max_num_batched_tokens ({max_num_batched_tokens}) is smaller than max_model_len "
            f"({max_model_len}). This effectively limits the maximum sequence length to "
            "max_num_batched_tokens and makes vLLM reject longer sequences. Please increase "
            "max_num_batched_tokens or decrease max_model_len."
        )
        found.append(Violation("max_num_batched_tokens", msg))
    if max_num_batched_tokens < max_num_seqs:
        msg = (
            f"max_num_batched_tokens ({max_num_batched_tokens}) must be greater than or equal "
            f"to max_num_seqs ({max_num_seqs})."
        )
        found.append(Violation("max_num_batched_tokens", msg))
    if long_prefill_token_threshold > max_model_len:
        msg = (
            f"long_prefill_token_threshold ({long_prefill_token_threshold}) cannot be greater "
            f"than the max_model_len ({max_model_len})."
        )
        found.append(Violation("long_prefill_token_threshold", msg))
    return found


def parallel_violations(
    *,
    tensor_parallel: int,
    pipeline_parallel: int,
    data_parallel: int,
    num_gpus: int,
    num_attention_heads: int,
    num_layers: int,
) -> list[Violation]:
    """Parallel degrees the model or the machine cannot take."""
    found: list[Violation] = []
    if num_attention_heads % tensor_parallel:
        msg = (
            f"Total number of attention heads ({num_attention_heads}) must be divisible by "
            f"tensor parallel size ({tensor_parallel})."
        )
        found.append(Violation("tensor_parallel_size", msg))
    if num_layers < pipeline_parallel:
        msg = (
            f"Pipeline parallel size ({pipeline_parallel}) is larger than the number of hidden "
            f"layers ({num_layers})."
        )
        found.append(Violation("pipeline_parallel_size", msg))
    world = tensor_parallel * pipeline_parallel * data_parallel
    if world > num_gpus:
        msg = (
            "The number of required GPUs exceeds the total number of available GPUs in the "
            f"placement group. World size ({world}) = tensor_parallel_size ({tensor_parallel})"
            f" x pipeline_parallel_size ({pipeline_parallel}) x data_parallel_size "
            f"({data_parallel}) > available GPUs ({num_gpus})."
        )
        found.append(Violation("tensor_parallel_size", msg))
    return found


#: The flags `given_violations` reads.
CROSS_FIELD_FLAGS = (
    "max_num_seqs",
    "max_num_batched_tokens",
    "max_model_len",
    "enable_chunked_prefill",
    "long_prefill_token_threshold",
)


def given_violations(values: dict[str, object]) -> list[Violation]:
    """The cross-field ValueErrors vLLM is sure to raise for these flags, judged from the flags
    given alone: a rule one of whose inputs is left to vLLM's default (which depends on the model
    and the machine) is not applied. For `validate`, before anything starts."""

    def number(dest: str) -> int | None:
        value = values.get(dest)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return None
        return value

    seqs, tokens = number("max_num_seqs"), number("max_num_batched_tokens")
    length, threshold = number("max_model_len"), number("long_prefill_token_threshold")
    return cross_field_violations(
        max_num_seqs=seqs if seqs is not None and tokens is not None else 0,
        max_num_batched_tokens=tokens if tokens is not None else 0,
        max_model_len=length if length is not None else 0,
        chunked_prefill=values.get("enable_chunked_prefill") is not False or length is None,
        long_prefill_token_threshold=threshold if threshold is not None and length else 0,
        derived_max_model_len=0,
        user_set_max_model_len=False,
        user_set_batched_tokens=tokens is not None,
        allow_long_max_model_len=True,
    )
