"""When ``server.fast_start`` keeps a study's ranking valid, checked with the rest of its file.

Random weights (``--load-format dummy``) run every step exactly as long as the real ones: the
same shapes, the same kernels, the same batches. What changes is the text, so a figure that
depends on the generated tokens would be wrong:

- speculative decoding: how many drafted tokens are accepted depends on what the target model
  would have said; random weights accept almost nothing, and the gain of a speculative
  configuration disappears (``--speculative-config``/``-sc``, ``--spec-method``,
  ``--spec-model``, ``--spec-tokens`` in vLLM 0.32's ``engine/arg_utils.py``);
- a dataset workload: GuideLLM asks for ``max_tokens`` but, for file prompts without an output
  length, not ``ignore_eos`` (``backends/openai/request_handlers.py``), so a request ends at the
  first end-of-sequence token, which random weights place at random.

Synthetic prompts are safe: GuideLLM sends ``ignore_eos`` with their output length, so every
request generates exactly ``workload.output_tokens`` whatever the weights. The compile cache
never changes a figure: vLLM loads the same compiled graphs it would have built.
"""

from __future__ import annotations

from collections.abc import Mapping

from tui_tuner.core.commands import is_dummy_load_format
from tui_tuner.core.config import ServerSettings, WorkloadSettings
from tui_tuner.core.config_problems import Context
from tui_tuner.core.space import SearchSpace

__all__ = ["SPECULATIVE_DESTS", "check_fast_start", "speculative_option"]

#: vLLM's speculative-decoding arguments by dest (``EngineArgs``), in case a flag table or a
#: search space ever names them.
SPECULATIVE_DESTS = frozenset({"speculative_config", "spec_method", "spec_model", "spec_tokens"})
_SPECULATIVE_OPTIONS = ("--speculative-config", "--spec-method", "--spec-model", "--spec-tokens")

WHY_DUMMY = (
    "server.fast_start loads random weights (--load-format dummy): the speed is that of the "
    "real model, the generated text is not"
)


def speculative_option(arg: str) -> bool:
    """Whether an extra argument turns speculative decoding on: ``-sc``, ``--speculative-config``
    (also ``=...``, dotted ``.method`` keys and underscores), ``--spec-method`` and friends."""
    name = arg.split("=", 1)[0].replace("_", "-")
    if name == "-sc" or name.startswith("-sc."):
        return True
    return any(name == o or name.startswith(o + ".") for o in _SPECULATIVE_OPTIONS)


def check_fast_start(
    ctx: Context,
    server: ServerSettings,
    workload: WorkloadSettings,
    space: SearchSpace,
    paths: Mapping[str, str],
) -> None:
    """Refuse random weights where a figure depends on the text, and random weights asked for
    behind the tuner's back (``--load-format dummy`` in ``server.extra_args``, which the export
    would then hand to the user's deployment)."""
    for index, arg in enumerate(server.extra_args):
        if is_dummy_load_format(server.extra_args, index):
            ctx.problem(
                f"server.extra_args[{index}]",
                arg,
                "random weights go through server.fast_start: true, which checks the study can "
                "use them and keeps --load-format dummy out of the exported command",
            )
    if not server.fast_start:
        return
    conflicts: list[tuple[str, object, str]] = []
    for dest in sorted(SPECULATIVE_DESTS & set(server.flags)):
        conflicts.append((f"server.flags.{dest}", dest, "speculative decoding"))
    for param in space:
        if param.key in SPECULATIVE_DESTS:
            conflicts.append((paths.get(param.key, "search_space"), param.name, "a search over "
                              "speculative decoding"))  # fmt: skip
    for index, arg in enumerate(server.extra_args):
        if speculative_option(arg):
            conflicts.append((f"server.extra_args[{index}]", arg, "speculative decoding"))
    for path, value, what in conflicts:
        ctx.problem(
            path,
            value,
            f"{what} cannot be measured with server.fast_start: true: {WHY_DUMMY}, and how "
            "many drafted tokens are accepted depends on that text; set fast_start: false",
        )
    if workload.dataset is not None:
        ctx.problem(
            "workload.dataset",
            workload.dataset,
            f"a dataset cannot be measured with server.fast_start: true: {WHY_DUMMY}, and "
            "GuideLLM lets a file prompt's answer end at its first end-of-sequence token, so "
            "the output lengths (and every throughput) would change; use synthetic prompts "
            "(prompt_tokens, output_tokens) or set fast_start: false",
        )
