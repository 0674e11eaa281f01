"""A server's Prometheus ``/metrics``, scraped and boiled down to the few figures the UI shows.

The GPU panel shows what the server itself reports while a trial runs: KV-cache usage, running
and waiting requests, generation tok/s. A real vLLM reports them under its own metric names
(REFERENCE.md section 1.4); the simulator reports the same names plus
``tui_tuner:simulated_info``, which is how the panel knows to label them "SIMULATED" rather than
let anyone mistake them for a GPU's.

Parsing is by hand, like the simulator's rendering: the text exposition format is line based,
we need a handful of gauges and counters, and a scrape a second must stay cheap. The parser is
lenient (a malformed line is skipped, never fatal) because a half-written or unexpected line
from some server version must not blank the panel. No Textual here: adapters stay headless.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from tui_tuner.core.telemetry import ServerFigures
from tui_tuner.engine.ports import ScrapeFailed

__all__ = [
    "SIMULATED_INFO",
    "Exposition",
    "MetricsScraper",
    "ScrapeError",
    "fetch_text",
    "parse_exposition",
    "scrape",
    "server_figures",
    "sim_figures",
]

SIMULATED_INFO = "tui_tuner:simulated_info"
#: Seconds a scrape may take; the panel polls about once a second, so a slow server is skipped.
SCRAPE_TIMEOUT_S = 1.0

_KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # 0.33 name, then 0.10's
_RUNNING = "vllm:num_requests_running"
_WAITING = "vllm:num_requests_waiting"
_GEN_TOKENS = "vllm:generation_tokens_total"
#: One series per engine (data-parallel replica) in both vLLM and the simulator: its sum counts
#: engines, which turns the summed KV usage back into a mean.
_ENGINES = "vllm:cache_config_info"
_SIM_LAG = "tui_tuner:sim_lag_seconds"

#: Sample suffixes kept for each family type; other samples (buckets, quantiles) are dropped.
_KEPT_SUFFIXES = {
    "histogram": ("_sum", "_count"),
    "gaugehistogram": ("_gsum", "_gcount"),
    "summary": ("_sum", "_count"),
}


class ScrapeError(ScrapeFailed):
    """``/metrics`` could not be read (refused, timed out, not 200); the message says which."""


@dataclass
class Exposition:
    """One parsed exposition: ``values`` by metric name (series of one name summed) and, for
    ``*_info`` metrics, the labels of their first series (an info metric's value is always 1;
    what it says is in its labels)."""

    values: dict[str, float] = field(default_factory=dict)
    info: dict[str, dict[str, str]] = field(default_factory=dict)


def parse_exposition(text: str) -> Exposition:
    """Parse Prometheus text exposition (0.0.4, and OpenMetrics' superset of it we meet).

    Histogram and summary families keep only their ``_sum`` and ``_count``: buckets and
    quantiles would be summed into nonsense by name. A line that does not parse is skipped.
    """
    out = Exposition()
    values = out.values
    kinds: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line[0] == "#":
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                kinds[parts[2]] = parts[3].strip().lower()
            continue
        sample = _parse_sample(line)
        if sample is None:
            continue
        name, labels, value = sample
        if not _kept(name, labels, kinds):
            continue
        values[name] = values.get(name, 0.0) + value
        if name.endswith("_info") and name not in out.info:
            out.info[name] = _label_map(labels)
    return out


def _kept(name: str, labels: str, kinds: Mapping[str, str]) -> bool:
    for suffix in ("_bucket", "_sum", "_count", "_gsum", "_gcount", "_created"):
        if name.endswith(suffix):
            family = name[: -len(suffix)]
            kept = _KEPT_SUFFIXES.get(kinds.get(family, ""))
            if kept is not None:
                return suffix in kept
    kind = kinds.get(name)
    if kind in _KEPT_SUFFIXES:
        return False  # a summary's quantile series carry the bare family name
    # No TYPE line: drop what looks like a bucket anyway.
    return not (name.endswith("_bucket") and "le=" in labels)


def _parse_sample(line: str) -> tuple[str, str, float] | None:
    """``name{labels} value [timestamp]`` -> (name, raw label text, value), or None.

    Label values may hold spaces, braces and escaped quotes, so the label set is scanned
    quote-aware rather than split on whitespace.
    """
    brace = line.find("{")
    labels = ""
    if brace == -1:
        parts = line.split()
        if len(parts) < 2:
            return None
        name, rest = parts[0], parts[1]
    else:
        name = line[:brace].strip()
        end = _closing_brace(line, brace + 1)
        if end == -1:
            return None
        labels = line[brace + 1 : end]
        tail = line[end + 1 :].split()
        if not tail:
            return None
        rest = tail[0]
    if not name:
        return None
    try:
        value = float(rest)
    except ValueError:
        return None
    return name, labels, value


def _closing_brace(line: str, start: int) -> int:
    quoted = escaped = False
    for i in range(start, len(line)):
        c = line[i]
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = quoted
        elif c == '"':
            quoted = not quoted
        elif c == "}" and not quoted:
            return i
    return -1


def _label_map(labels: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i, n = 0, len(labels)
    while i < n:
        eq = labels.find("=", i)
        if eq == -1:
            break
        key = labels[i:eq].strip().lstrip(",").strip()
        j = eq + 1
        while j < n and labels[j] != '"':
            j += 1
        j += 1
        chars: list[str] = []
        while j < n and labels[j] != '"':
            if labels[j] == "\\" and j + 1 < n:
                j += 1
                chars.append({"n": "\n"}.get(labels[j], labels[j]))
            else:
                chars.append(labels[j])
            j += 1
        out[key] = "".join(chars)
        i = j + 1
    return out


async def fetch_text(base_url: str, session: aiohttp.ClientSession) -> str:
    """The body of ``<base_url>/metrics``; raises ScrapeError (never aiohttp's own errors)."""
    url = base_url.rstrip("/") + "/metrics"
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
    try:
        async with session.get(url, timeout=timeout) as response:
            if response.status != 200:
                raise ScrapeError(f"{url}: HTTP {response.status}")
            return await response.text(errors="replace")
    except asyncio.TimeoutError as err:
        raise ScrapeError(f"{url}: no answer in {SCRAPE_TIMEOUT_S:g} s") from err
    except aiohttp.ClientError as err:
        raise ScrapeError(f"{url}: {err}") from err


async def scrape(base_url: str, session: aiohttp.ClientSession) -> dict[str, float]:
    """Metric name (labels stripped) -> value, series of one name summed. Raises ScrapeError."""
    return parse_exposition(await fetch_text(base_url, session)).values


def server_figures(
    metrics: Mapping[str, float],
    previous: ServerFigures | None = None,
    *,
    at: float | None = None,
    info: Mapping[str, str] | None = None,
) -> ServerFigures | None:
    """The figures of any vLLM-like server, simulated or not; None if it reports none of them.

    `previous` is the last scrape's figures, for generation tok/s; a counter that went down
    (the server restarted) gives None rather than a negative rate. `info` is the labels of
    ``tui_tuner:simulated_info`` (see `Exposition.info`), for the simulated GPU's name.
    """
    now = time.monotonic() if at is None else at
    simulated = SIMULATED_INFO in metrics
    kv = next((metrics[n] for n in _KV_USAGE if n in metrics), None)
    running, waiting = metrics.get(_RUNNING), metrics.get(_WAITING)
    tokens = metrics.get(_GEN_TOKENS)
    if not simulated and kv is None and running is None and waiting is None and tokens is None:
        return None
    engines = max(1, round(metrics.get(_ENGINES, 1.0)))
    rate = None
    if (
        previous is not None
        and previous.generation_tokens_total is not None
        and tokens is not None
        and now > previous.at
        and tokens >= previous.generation_tokens_total
    ):
        rate = (tokens - previous.generation_tokens_total) / (now - previous.at)
    labels = info or {}
    name = labels.get("gpu") or (f"profile {labels['profile']}" if "profile" in labels else "")
    return ServerFigures(
        simulated=simulated,
        gpu_name=name if simulated else "",
        kv_cache_usage_pct=None if kv is None else _clamp(100.0 * kv / engines),
        running=_count(running),
        waiting=_count(waiting),
        generation_tok_s=rate,
        generation_tokens_total=tokens,
        at=now,
        engines=engines,
        sim_lag_s=metrics.get(_SIM_LAG) if simulated else None,
    )


def sim_figures(
    metrics: Mapping[str, float],
    previous: ServerFigures | None = None,
    *,
    at: float | None = None,
    info: Mapping[str, str] | None = None,
) -> ServerFigures | None:
    """The simulator's figures; None when ``tui_tuner:simulated_info`` is absent (a real vLLM:
    use `server_figures`, which gives the same figures with ``simulated=False``)."""
    if SIMULATED_INFO not in metrics:
        return None
    return server_figures(metrics, previous, at=at, info=info)


class MetricsScraper:
    """The running server's figures, scraped about once a second (``ServerFiguresSource`` of
    ``engine/ports.py``). It keeps the previous scrape of the same server for the tok/s rate;
    a new base URL (the next trial's server) starts afresh. One HTTP session for the study,
    opened on the first poll, closed by `close`."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._url = ""
        self._last: ServerFigures | None = None

    async def poll(self, base_url: str) -> ServerFigures | None:
        """The server's figures; None if it reports none. Raises ScrapeError if it cannot be
        read (still starting, gone, too slow)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        if base_url != self._url:
            self._url, self._last = base_url, None
        expo = parse_exposition(await fetch_text(base_url, self._session))
        self._last = server_figures(expo.values, self._last, info=expo.info.get(SIMULATED_INFO))
        return self._last

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _clamp(pct: float) -> float:
    return pct if math.isnan(pct) else min(100.0, max(0.0, pct))


def _count(value: float | None) -> int | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value)
