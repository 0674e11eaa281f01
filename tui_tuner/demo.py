"""`tui-tuner demo`: the simulated server measured by real GuideLLM runs, headless.

Two configurations of the simulated `vllm serve` (vLLM's defaults, and max-num-seqs 8) are
started, loaded by GuideLLM for a short window each, stopped, and compared in a table: the
smallest version of what a tuning study does, runnable on a laptop without a GPU. The terminal
UI replaces this as the main job once it exists.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tui_tuner.adapters.guidellm import (
    GuidellmWorkload,
    build_guidellm_command,
    parse_guidellm_report,
    parse_progress_line,
)
from tui_tuner.adapters.guidellm_runner import find_guidellm, run_guidellm
from tui_tuner.adapters.vllm_server import ServerStartError, free_port, launch_server
from tui_tuner.core.measurement import (
    CLIENT_LIMIT_WARNING_CODES,
    Measurement,
    client_limited,
    warning_code,
)
from tui_tuner.sim.args import parse
from tui_tuner.sim.predict import predict_closed_loop
from tui_tuner.sim.profiles import get_profile
from tui_tuner.sim.tiny_model import ensure_tiny_model

CONFIGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("baseline", ()),
    ("max-num-seqs 8", ("--max-num-seqs", "8")),
)
PROFILE = "llama-8b-h100"


@dataclass(frozen=True)
class DemoResult:
    label: str
    measurement: Measurement | None
    error: str | None = None


async def _measure(
    label: str,
    flags: tuple[str, ...],
    *,
    model: Path,
    guidellm: Path,
    work: Path,
    workload: GuidellmWorkload,
    time_scale: float,
    console: Console,
) -> DemoResult:
    port, key = free_port(), secrets.token_urlsafe(16)
    slug = "baseline" if not flags else "-".join(f.strip("-") for f in flags)
    trial_dir = work / slug
    server_flags = {"--host": "127.0.0.1", "--port": str(port), "--api-key": key,
                    "--sim-profile": PROFILE, "--sim-time-scale": f"{time_scale:g}",
                    "--sim-startup-scale": "25"}  # fmt: skip
    command = [sys.executable, "-m", "tui_tuner", "sim-serve", str(model),
               *(part for pair in server_flags.items() for part in pair), *flags]  # fmt: skip
    console.print(f"[bold]{label}[/]: starting the simulated server …")
    try:
        async with launch_server(
            command,
            host="127.0.0.1",
            port=port,
            startup_timeout_s=60,
            log_path=trial_dir / "server.log",
        ) as server:
            report = trial_dir / "report.json"
            cmd = build_guidellm_command(
                guidellm, server.base_url, str(model), model, workload, report, api_key=key
            )

            def show(line: str) -> None:
                progress = parse_progress_line(line)
                if progress is not None:
                    console.print(
                        f"  GuideLLM {progress.status}: {progress.successful} ok, "
                        f"{progress.errored} errors, {progress.output_tok_s:.0f} "
                        "output tok/s"
                    )

            console.print(
                f"  healthy; GuideLLM: {workload.streams} streams for "
                f"{workload.max_duration_s:g} s (plus its own start-up) …"
            )
            env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            code = await run_guidellm(
                cmd, env=env, on_line=show, timeout_s=300, log_path=trial_dir / "guidellm.log"
            )
            if code != 0:
                return DemoResult(
                    label, None, f"GuideLLM exited with {code}; see {trial_dir / 'guidellm.log'}"
                )
            return DemoResult(label, parse_guidellm_report(report))
    except ServerStartError as err:
        return DemoResult(
            label, None, f"server failed to start ({err}): {' | '.join(err.tail[-3:])}"
        )
    except ValueError as err:
        return DemoResult(label, None, str(err))


def _table(
    results: list[DemoResult], streams: int, time_scale: float, predicted: list[float]
) -> tuple[Table, list[str]]:
    table = Table(
        title=f"SIMULATED vLLM ({PROFILE}, time scale {time_scale:g}x), measured by GuideLLM 0.8.1",
        title_justify="left",
    )
    table.add_column("config")
    for column in ("tok/s", "model", "req/s", "p50 ms", "p95 ms", "TTFT95", "ITL50", "ok/err"):
        table.add_column(column, justify="right")
    notes: list[str] = []
    base = results[0].measurement
    for result, model_tok_s in zip(results, predicted, strict=True):
        m = result.measurement
        if m is None:
            table.add_row(result.label, *["-"] * 8)
            notes.append(f"{result.label}: [red]{result.error}[/]")
            continue
        if base is not None and m is not base and base.output_tok_s > 0:
            gain = (m.output_tok_s / base.output_tok_s - 1) * 100
            notes.append(f"{result.label}: {gain:+.0f}% output tok/s against the baseline")
        if client_limited(m, streams):
            codes = sorted({warning_code(w) for w in m.warnings} & CLIENT_LIMIT_WARNING_CODES)
            why = f"GuideLLM warned {', '.join(codes)}; " if codes else ""
            notes.append(
                f"{result.label}: [yellow]the client may have limited this figure[/] ({why}"
                f"achieved concurrency {m.achieved_concurrency:.1f} of {streams})"
            )
        table.add_row(
            result.label,
            f"{m.output_tok_s:,.0f}",
            f"{model_tok_s:,.0f}",
            f"{m.requests_per_s:.1f}",
            f"{m.request_latency_p50_ms:,.0f}",
            f"{m.request_latency_p95_ms:,.0f}",
            f"{m.ttft_p95_ms:,.0f}",
            f"{m.itl_p50_ms:.1f}",
            f"{m.successful_requests}/{m.errored_requests}",
        )
    return table, notes


def run_demo(
    *,
    guidellm: str | None,
    duration_s: float,
    streams: int,
    time_scale: float,
    work_dir: Path | None,
) -> int:
    console = Console()
    exe = find_guidellm(guidellm)
    work = work_dir or Path(tempfile.mkdtemp(prefix="tui-tuner-demo-"))
    model = ensure_tiny_model(work / "tiny-llama").path
    workload = GuidellmWorkload(
        prompt_tokens=256,
        output_tokens=128,
        streams=streams,
        max_duration_s=duration_s,
        warmup=0.2,
        cooldown=0.1,
        seed=0,
    )
    console.print(f"tui-tuner demo: no GPU needed; model, logs and reports in {work}")

    async def both() -> list[DemoResult]:
        return [
            await _measure(
                label,
                flags,
                model=model,
                guidellm=exe,
                work=work,
                workload=workload,
                time_scale=time_scale,
                console=console,
            )
            for label, flags in CONFIGS
        ]

    results = asyncio.run(both())
    predicted = [
        predict_closed_loop(
            parse([str(model), *flags])[0],
            get_profile(PROFILE),
            concurrency=streams,
            prompt_tokens=workload.prompt_tokens,
            output_tokens=workload.output_tokens,
            duration_s=duration_s * time_scale,
        ).output_tok_s
        * time_scale
        for _, flags in CONFIGS
    ]
    table, notes = _table(results, streams, time_scale, predicted)
    console.print(table)
    for note in notes:
        console.print("  " + note)
    console.print(
        "  tok/s: output tokens/s GuideLLM measured; model: what the simulator's "
        "performance model predicts for the same load (closed loop, no client limits). "
        "Latencies (ms) are wall-clock as the client saw them."
    )
    return 0 if all(r.measurement is not None for r in results) else 1
