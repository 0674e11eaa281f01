"""The `tui-tuner` command: the composition root.

`sim-serve` hands its whole command line to the simulated server, whose parser mimics
`vllm serve`; the other subcommands are parsed here. Heavy modules are imported inside each
command so that `tui-tuner --help` stays fast and headless commands never import Textual.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tui_tuner import __version__
from tui_tuner.core.errors import UserError


def _make_tiny_model(ns: argparse.Namespace) -> int:
    from tui_tuner.sim.tiny_model import write_tiny_model

    info = write_tiny_model(Path(ns.directory), seed=ns.seed, overwrite=ns.overwrite)
    verb = "up to date" if info.reused else "written"
    print(
        f"tiny model {verb}: {info.path} ({info.num_parameters:,} parameters, "
        f"vocab {info.vocab_size}, seed {info.seed})"
    )
    return 0


def _demo(ns: argparse.Namespace) -> int:
    from tui_tuner.demo import run_demo

    return run_demo(
        guidellm=ns.guidellm,
        duration_s=ns.duration,
        streams=ns.streams,
        time_scale=ns.time_scale,
        work_dir=Path(ns.work_dir) if ns.work_dir else None,
    )


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tui-tuner",
        description="Find the fastest `vllm serve` settings for your model, workload and SLA.",
    )
    parser.add_argument("--version", action="version", version=f"tui-tuner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser(
        "sim-serve",
        add_help=False,
        help="a SIMULATED vLLM server: `vllm serve`'s flags and API, no GPU (see sim-serve --help)",
    )
    tiny = sub.add_parser("make-tiny-model", help="write a tiny random Llama model directory")
    tiny.add_argument("directory")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--overwrite", action="store_true", help="rewrite even if up to date")
    tiny.set_defaults(func=_make_tiny_model)
    demo = sub.add_parser(
        "demo", help="headless demo: the simulated server measured by a short GuideLLM run"
    )
    demo.add_argument(
        "--guidellm",
        default=None,
        help="GuideLLM executable (default: $TUI_TUNER_GUIDELLM, then PATH)",
    )
    demo.add_argument(
        "--duration", type=_positive(float), default=10.0, help="seconds of load per run"
    )
    demo.add_argument(
        "--streams", type=_positive(int), default=32, help="concurrent request streams"
    )
    demo.add_argument(
        "--time-scale", type=_positive(float), default=1.0, help="simulated seconds per wall second"
    )
    demo.add_argument("--work-dir", default=None, help="where the model and reports go")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sim-serve":
        from tui_tuner.sim.main import main as sim_main

        return sim_main(argv[1:])
    ns = build_parser().parse_args(argv)
    try:
        code: int = ns.func(ns)
    except UserError as err:
        print(f"tui-tuner: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
