#!/usr/bin/env python3
"""A stand-in for `guidellm run` in the fault tests, quick where GuideLLM takes 20 s to start.

It reads the options tui-tuner passes (the same argument list real GuideLLM gets), sends real
streaming completions to the target with the API key for the load window, then writes a report.
The report's figures are those of the real GuideLLM report in tests/fixtures/guidellm: a fault
test checks what the tuner does, never a figure. Real GuideLLM is in test_study_sim.py and the
real-vLLM tests.

A goodput search (--profile kind=goodput) gets the real goodput report of the same directory.

FAKE_GUIDELLM_MODE picks a fault:
  ok         (default) load for the window, then a whole report, exit 0
  crash      a traceback after one second, exit 1
  hang       ignore SIGTERM and the load window; never exit
  truncated  half a report, exit 0
  malformed  a report that is not JSON, exit 0
  errors     every request failed: exit 0 with a report that counts no successful request
A comma-separated list ("crash,hang,ok") gives each run its own mode, in order (the last one
repeats); the runs are counted in FAKE_GUIDELLM_RUNS, which a list needs.
FAKE_GUIDELLM_PIDFILE, when set, gets this process's pid (for the tests' leak checks).
FAKE_GUIDELLM_RUNS, when set, gets one line per run: this process's pid.
FAKE_GUIDELLM_KEYFILE, when set, gets one line per run: the API key received ("-" for none), so a
test can search the tuner's files for it.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "guidellm" / "report_concurrent.json"
#: A real goodput search's report (kind=goodput on sim-serve): what a goodput profile gets.
GOODPUT_FIXTURE = FIXTURE.with_name("report_goodput.json")


def _fields(text: str) -> dict[str, Any]:
    """An option as tui-tuner writes it: JSON, or kind=...,key=value pairs."""
    if text.startswith("{"):
        return dict(json.loads(text))
    return dict(pair.split("=", 1) for pair in text.split(","))


def _options(argv: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for flag, value in itertools.pairwise(argv):
        if flag == "--scenario":  # the backend, with the API key, as GuideLLM reads it
            backend = json.loads(Path(value).read_text())["spec"]["backend"]
            found[f"backend:{backend.get('kind')}"] = backend
        elif flag.startswith("--") and not value.startswith("--"):
            fields = _fields(value)
            found[f"{flag[2:]}:{fields.get('kind')}"] = fields
    return found


def _load(
    backend: dict[str, Any], seconds: float, tally: dict[str, int], spans: list[tuple[float, float]]
) -> None:
    """One stream: completions one after another until the window closes; each request's
    start and end (wall clock) go to ``spans``."""
    body = json.dumps({"model": backend["model"], "prompt": "hello " * 16, "max_tokens": 8})
    headers = {"Content-Type": "application/json"}
    if backend.get("api_key"):
        headers["Authorization"] = f"Bearer {backend['api_key']}"
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        request = urllib.request.Request(
            f"{backend['target']}/v1/completions", body.encode(), headers, method="POST"
        )
        try:
            began = time.time()
            with urllib.request.urlopen(request, timeout=30) as answer:
                answer.read()
            spans.append((began, time.time()))
            tally["ok"] += 1
        except OSError:
            tally["errored"] += 1
            time.sleep(0.05)


def _append(variable: str, line: str) -> None:
    if os.environ.get(variable):
        with Path(os.environ[variable]).open("a") as out:
            out.write(line + "\n")


def _mode() -> str:
    """This run's mode: the one given, or the next of a comma-separated list."""
    modes = os.environ.get("FAKE_GUIDELLM_MODE", "ok").split(",")
    runs = Path(os.environ["FAKE_GUIDELLM_RUNS"]) if len(modes) > 1 else None
    done = len(runs.read_text().splitlines()) - 1 if runs is not None else 0  # this run counted
    return modes[min(done, len(modes) - 1)].strip()


def main() -> int:
    argv = sys.argv[1:]
    if os.environ.get("FAKE_GUIDELLM_PIDFILE"):
        Path(os.environ["FAKE_GUIDELLM_PIDFILE"]).write_text(str(os.getpid()))
    _append("FAKE_GUIDELLM_RUNS", str(os.getpid()))
    if not argv or argv[0] != "run":
        print("Usage: guidellm [OPTIONS] COMMAND [ARGS]...", file=sys.stderr)
        return 2
    mode = _mode()
    options = _options(argv[1:])
    backend = options["backend:openai_http"]
    _append("FAKE_GUIDELLM_KEYFILE", str(backend.get("api_key") or "-"))
    report = Path(next(v["path"] for k, v in options.items() if k == "output:json"))
    window = float(options["constraint:max_duration"]["seconds"])
    profile = next(v for k, v in options.items() if k.startswith("profile:"))
    goodput = profile.get("kind") == "goodput"
    streams = int(profile.get("initial_streams" if goodput else "streams", 1))
    print(f"✔ OpenAIHTTPBackend backend validated with model {backend['model']}", flush=True)
    if mode == "crash":
        time.sleep(1)
        print("Traceback (most recent call last):\nRuntimeError: fake GuideLLM crashed", flush=True)
        return 1
    if mode == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    tally = {"ok": 0, "errored": 0}
    spans: list[tuple[float, float]] = []
    began = time.time()
    threads = [
        threading.Thread(target=_load, args=(backend, window, tally, spans), daemon=True)
        for _ in range(min(streams, 4))
    ]
    for t in threads:
        t.start()
    start, warmup = time.monotonic(), float(profile.get("warmup") or 0)
    while any(t.is_alive() for t in threads):
        time.sleep(0.25)
        elapsed = time.monotonic() - start
        status = "warmup" if elapsed < warmup else "active"
        # GuideLLM's own progress line, so the tuner's phases follow it as they follow GuideLLM.
        counts = f"successful={tally['ok']} errored={tally['errored']} incomplete=0"
        rate = f"requests/s={tally['ok'] / elapsed:.2f} output_tokens/s=0.0"
        head = f"Benchmark 0 (fake@{streams}): {status} | elapsed={elapsed:.1f}s"
        print(f"{head} | {counts} | {rate}", flush=True)
    text = (GOODPUT_FIXTURE if goodput else FIXTURE).read_text()
    if mode == "truncated":
        text = text[: len(text) // 2]
    elif mode == "malformed":
        text = "<html>not a report</html>"
    elif mode == "errors" or tally["ok"] == 0:
        data = json.loads(text)
        totals = data["benchmarks"][-1]["metrics"]["request_totals"]
        totals["errored"] = totals["successful"] + totals["errored"]
        totals["successful"] = 0
        text = json.dumps(data)
    elif spans:
        text = json.dumps(_with_timings(json.loads(text), spans, began))
    report.write_text(text)
    return 0


def _with_timings(data: dict[str, Any], spans: list[tuple[float, float]], began: float) -> Any:
    """The fixture's report with the window and the per-request timings of the requests this
    run really sent (a non-streamed answer: first and last token at its end), so that what the
    tuner reads from timings (a stalled server) is real; the figures stay the fixture's."""
    bench = data["benchmarks"][-1]
    if data.get("conclusions"):  # a goodput search: the found level is the one read
        found = data["conclusions"][-1].get("best_passing_streams")
        bench = next(b for b in data["benchmarks"] if b["config"]["strategy"]["streams"] == found)
    bench["start_time"], bench["end_time"] = began, max(end for _, end in spans)
    template = bench["requests"]["successful"][0]
    requests = []
    for start, end in spans:
        item = json.loads(json.dumps(template))
        timings = item["info"]["timings"]
        timings["request_start"], timings["request_end"] = start, end
        timings["first_token_iteration"] = timings["last_token_iteration"] = end
        requests.append(item)
    bench["requests"] = {"successful": requests, "errored": [], "incomplete": [], "total": None}
    return data


if __name__ == "__main__":
    sys.exit(main())
