"""Soak: a study on the simulated server under a seeded random schedule of faults.

The tuner runs headless; at random moments the bench kills (SIGKILL) or freezes (SIGSTOP, then
SIGCONT) the server or GuideLLM, or sends the tuner SIGINT, SIGTERM, SIGHUP or SIGKILL, and
resumes the study whenever the tuner has ended, until the study is done. It checks, after each
fault and at the end:

- trials lost: a trial that had finished (measured, failed or pruned) and is later gone or
  changed;
- processes leaked: a process of the study (its command line names the soak directory) still
  alive 15 s after the tuner ended;
- tracebacks seen: "Traceback" in anything the tuner printed;
- studies stranded: the study ended short of its budget with unmeasured configurations left, or
  a `resume` of the finished study added trials.

All four must be 0. The same seed gives the same schedule (the moments a fault lands on still
vary with the machine's speed).

    .venv/bin/python bench/soak.py                      # 12 faults, real GuideLLM (~15 min)
    .venv/bin/python bench/soak.py --quick --faults 20  # the quick fake GuideLLM (~5 min)
    .venv/bin/python bench/soak.py --seed 3 --json      # one JSON object as the last line
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "sample_configs" / "sim-profiles" / "sim-profile-fast-start.yaml"
FAKE_GUIDELLM = ROOT / "tests" / "fakes" / "fake_guidellm.py"

#: What a fault does to whom. The tuner's own signals end its run; the others it must survive.
FAULTS = (
    ("server", signal.SIGKILL),
    ("server", signal.SIGSTOP),
    ("guidellm", signal.SIGKILL),
    ("guidellm", signal.SIGSTOP),
    ("tuner", signal.SIGINT),
    ("tuner", signal.SIGTERM),
    ("tuner", signal.SIGHUP),
    ("tuner", signal.SIGKILL),
)
PHASES = ("launching", "ready", "warmup", "measuring", "teardown", "between")
#: Exit codes a tuner may end with: finished or stopped (0), a failure streak (1), a signal.
ENDINGS = {
    signal.SIGKILL: {-9},
    signal.SIGINT: {130},
    signal.SIGTERM: {130},
    signal.SIGHUP: {129, 130},
}


@dataclass
class Tally:
    faults: list[str] = field(default_factory=list)
    trials_lost: int = 0
    processes_leaked: int = 0
    tracebacks_seen: int = 0
    studies_stranded: int = 0
    bad_exits: int = 0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  !! {text}", flush=True)


def write_config(work: Path, trials: int) -> Path:
    profile = work / "soak-profile.yaml"
    profile.write_text(PROFILE.read_text())
    config = work / "soak.yaml"
    config.write_text(
        f"""
study: {{name: soak, seed: 0, sampler: tpe, n_trials: {trials}, max_consecutive_failures: 6}}
server:
  command: ["tui-tuner", "sim-serve"]
  model: soak-model
  extra_args: ["--sim-profile-file", "{profile}", "--sim-time-scale", "4"]
  startup_timeout_s: 60
workload: {{prompt_tokens: 64, output_tokens: 32, streams: 4, duration_s: 4, warmup_s: 1}}
search_space:
  max_num_seqs: {{options: [4, 8, 16, 32, 64, 128]}}
  enable_prefix_caching: {{type: bool}}
"""
    )
    return config


def processes(work: Path, *needles: str, besides: int = 0) -> list[psutil.Process]:
    """Live processes whose command line names ``work`` (and every needle), but ``besides``
    (the tuner, whose command line names the fake GuideLLM too)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        line = " ".join(p.info["cmdline"] or ())
        mine = str(work) in line and all(n in line for n in needles)
        if (
            mine
            and p.info["status"] != psutil.STATUS_ZOMBIE
            and p.pid not in (os.getpid(), besides)
        ):
            found.append(p)
    return found


def finished_records(work: Path) -> dict[int, tuple[object, ...]]:
    """Trial number -> what a finished trial holds, read from the storage as it is now."""
    study = work / "study"
    if not (study / "study.db").exists():
        return {}
    code = (
        "import json,sys\n"
        "from tui_tuner.core.config_load import load_config\n"
        "from tui_tuner.engine.study import StudyStore, default_storage_url\n"
        "from tui_tuner.study_dir import saved_overrides\n"
        "d=__import__('pathlib').Path(sys.argv[1])\n"
        "c=load_config(d/'config.yaml', saved_overrides(d))\n"
        "out={r.number: [r.state, r.params, r.measurement and r.measurement.output_tok_s,"
        " r.failure_class, r.interrupted, r.rerun, r.duplicate_of]"
        " for r in StudyStore(c, default_storage_url(d)).records()"
        " if r.state in ('complete','failed','pruned') and not r.interrupted}\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(study)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        return {}
    return {int(k): tuple(json.dumps(v, sort_keys=True) for v in val)
            for k, val in json.loads(done.stdout).items()}  # fmt: skip


def phase_now(events: Path) -> str:
    """The phase of the running trial from the event stream ("between" between trials)."""
    if not events.exists():
        return "between"
    last = "between"
    for line in events.read_text().splitlines()[-200:]:
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("kind") == "trial_phase":
            last = e["phase"]
        elif e.get("kind") == "trial_finished":
            last = "between"
    return last


def start_tuner(
    work: Path, config: Path, guidellm: Path | None, first: bool
) -> subprocess.Popen[str]:
    study, events = work / "study", work / "events.jsonl"
    events.unlink(missing_ok=True)  # a new run: the last one's phases must not be read as its
    target = ["tune", str(config), "--study-dir", str(study)] if first else ["resume", str(study)]
    cmd = [sys.executable, "-m", "tui_tuner", *target, "--headless", "--events-jsonl", str(events)]
    if guidellm is not None:
        cmd += ["--guidellm", str(guidellm)]
    log = (work / "tuner.log").open("a")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def wait_ended(proc: subprocess.Popen[str], timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def check_after_exit(work: Path, tally: Tally, grace_s: float = 15.0) -> None:
    deadline = time.monotonic() + grace_s
    left = processes(work)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes(work)
    if left:
        tally.processes_leaked += len(left)
        tally.note(f"left running: {[' '.join(p.cmdline())[:120] for p in left]}")
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()


def check_lost(before: dict[int, tuple[object, ...]], work: Path, tally: Tally) -> dict:
    after = finished_records(work)
    for number, record in before.items():
        if after.get(number) != record:
            tally.trials_lost += 1
            tally.note(f"trial {number} was finished and is now {after.get(number)}")
    return after


def inject(rng: random.Random, work: Path, proc: subprocess.Popen[str], tally: Tally) -> bool:
    """One fault at a random moment of the running study; True if it ended the tuner run."""
    target, sig = rng.choice(FAULTS)
    phase = rng.choice(PHASES if target == "tuner" else ("warmup", "measuring"))
    events = work / "events.jsonl"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        hit = target == "tuner" or processes(work, _needle(target), besides=proc.pid)
        if phase_now(events) == phase and hit:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        return True
    time.sleep(rng.uniform(0.0, 1.0))
    label = f"{sig.name} to the {target} in {phase}"
    tally.faults.append(label)
    print(f"fault {len(tally.faults)}: {label}", flush=True)
    if target == "tuner":
        proc.send_signal(sig)
        code = wait_ended(proc, 120)
        if code is None:
            tally.bad_exits += 1
            tally.note("the tuner did not end within 120 s of the signal; killed")
            proc.kill()
            proc.wait()
        elif code not in ENDINGS[sig] | {0, 1}:
            tally.bad_exits += 1
            tally.note(f"the tuner exited {code} after {sig.name}")
        return True
    victims = processes(work, _needle(target), besides=proc.pid)
    if not victims:
        tally.note(f"no {target} process to hit; skipped")
        return False
    for p in victims:
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)
    if sig == signal.SIGSTOP:
        time.sleep(rng.uniform(3.0, 8.0))
        for p in victims:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGCONT)
    return False


def _needle(target: str) -> str:
    return "sim-serve" if target == "server" else "guidellm"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--faults", type=int, default=12)
    parser.add_argument("--trials", type=int, default=10, help="the study's budget")
    parser.add_argument("--quick", action="store_true", help="the fake GuideLLM (tests/fakes)")
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line")
    parser.add_argument("--work", type=Path, default=None, help="default: a new temporary dir")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = (args.work or Path(tempfile.mkdtemp(prefix="soak-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    config = write_config(work, args.trials)
    guidellm = FAKE_GUIDELLM if args.quick else None
    tally, known, first, runs = Tally(), {}, True, 0
    started = time.monotonic()
    while True:
        proc = start_tuner(work, config, guidellm, first)
        first, runs = False, runs + 1
        ended = False
        while len(tally.faults) < args.faults and not ended:
            ended = inject(rng, work, proc, tally)
        if not ended and wait_ended(proc, 1800) is None:  # the faults are spent: it finishes
            tally.bad_exits += 1
            tally.note("the tuner did not finish within 30 minutes; killed")
            proc.kill()
        proc.wait()
        check_after_exit(work, tally)
        known = check_lost(known, work, tally)
        if len(tally.faults) >= args.faults and proc.returncode in (0, 1) and not ended:
            break
        if runs > args.faults + 20:
            tally.note("more runs than faults: giving up")
            break
    output = (work / "tuner.log").read_text(errors="replace")
    tally.tracebacks_seen = output.count("Traceback")
    # The study is done: a resume must add nothing, and it must not have ended short.
    before = finished_records(work)
    counted = sum(
        1 for r in before.values() if not json.loads(r[5]) and json.loads(r[6]) is None
    )  # not queued again, not a duplicate
    again = start_tuner(work, config, guidellm, False)
    again.wait(600)
    check_after_exit(work, tally)
    after = finished_records(work)
    last = (work / "tuner.log").read_text(errors="replace")[len(output) :]
    if len(after) != len(before):
        tally.studies_stranded += 1
        tally.note(f"a resume of the finished study added {len(after) - len(before)} trial(s)")
    if counted < args.trials and "every configuration of the search space" not in last + output:
        tally.studies_stranded += 1
        tally.note(f"the study ended at {counted} of {args.trials} trials")
    tally.tracebacks_seen += last.count("Traceback")
    summary = {
        "faults": len(tally.faults),
        "tuner_runs": runs,
        "trials_finished": len(after),
        "trials_counted": counted,
        "trials_lost": tally.trials_lost,
        "processes_leaked": tally.processes_leaked,
        "tracebacks_seen": tally.tracebacks_seen,
        "studies_stranded": tally.studies_stranded,
        "bad_exits": tally.bad_exits,
        "seconds": round(time.monotonic() - started),
        "work": str(work),
    }
    print(
        f"\n{summary['faults']} faults over {runs} tuner runs, {len(after)} trials finished "
        f"({counted} counted) in {summary['seconds']} s:\n"
        f"  trials lost {tally.trials_lost}, processes leaked {tally.processes_leaked}, "
        f"tracebacks seen {tally.tracebacks_seen}, studies stranded {tally.studies_stranded}, "
        f"unexpected exits {tally.bad_exits}\n  (logs in {work})"
    )
    if args.json:
        print(json.dumps(summary))
    bad = tally.trials_lost + tally.processes_leaked + tally.tracebacks_seen
    return 1 if bad + tally.studies_stranded + tally.bad_exits else 0


if __name__ == "__main__":
    sys.exit(main())
