"""The argument parser of `tui-tuner sim-serve`: vLLM's flags from core.vllm_flags, plus `--sim-*`.

It behaves like vLLM's FlexibleArgumentParser where a tuner can tell the difference: `-O3`,
`--max_num_seqs` (underscores), `-cc.mode=3` dotted JSON keys, `2k`/`2K` integers, `--enable-x` /
`--disable-x` pairs, and exit code 2 with argparse's message for unknown, removed or mistyped flags.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from tui_tuner.core.vllm_flags import FLAGS, Flag, ServeArgs, human_readable_int
from tui_tuner.sim.profiles import DEFAULT_PROFILE, PROFILES


@dataclass(frozen=True)
class SimOptions:
    profile: str
    profile_file: Path | None
    time_scale: float
    startup_scale: float
    seed: int
    gpu_busy_gib: float
    noise: float
    #: A directory whose tokenizer.json counts tokens instead of MODEL's (None: MODEL's).
    tokenizer: Path | None = None
    #: vLLM's ``--load-format`` (not a tuning flag, so not in core.vllm_flags): ``dummy``
    #: fills the weights randomly instead of reading them, which only shortens the start-up.
    load_format: str = "auto"


class _VllmParser(argparse.ArgumentParser):
    """argparse errors exit with code 2 and vLLM's wording."""

    def error(self, message: str) -> NoReturn:
        self.print_usage()
        self.exit(2, f"{self.prog}: error: {message}\n")


def _human_readable_int(text: str) -> int:
    try:
        return human_readable_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid human_readable_int value: {text!r}") from None


def _max_model_len(text: str) -> int:
    """max-model-len also takes `auto` (= -1): the longest length that fits in memory."""
    return -1 if text.strip().lower() == "auto" else _human_readable_int(text)


def _json_arg(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"invalid loads value: {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"invalid loads value: {text!r}")
    return value


class _EnableDisable(argparse.Action):
    """`--enable-x` sets True; `--disable-x` and the hidden `--no-enable-x` set False."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        hidden = [
            o.replace("--enable-", "--no-enable-") for o in option_strings if "--enable-" in o
        ]
        super().__init__([*option_strings, *hidden], dest, nargs=0, **kwargs)  # type: ignore[arg-type]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, bool(option_string and option_string.startswith("--enable-")))


def _add_flag(parser: argparse.ArgumentParser, flag: Flag) -> None:
    names = list(flag.option_strings)
    shown = flag.runtime_default or (None if flag.default is None else str(flag.default))
    text = f"{flag.help} Default: {shown}." if shown else flag.help
    common: dict[str, object] = {"dest": flag.dest, "default": None, "help": text}
    if flag.kind == "enable_disable":
        parser.add_argument(*names, action=_EnableDisable, **common)  # type: ignore[arg-type]
    elif flag.kind == "bool":
        parser.add_argument(*names, action=argparse.BooleanOptionalAction, **common)  # type: ignore[arg-type]
    elif flag.kind == "int_list":
        parser.add_argument(*names, type=int, nargs="+", **common)  # type: ignore[arg-type]
    elif flag.kind == "json":
        parser.add_argument(*names, type=_json_arg, **common)  # type: ignore[arg-type]
    elif flag.kind == "opt_level":
        parser.add_argument(*names, type=int, **common)  # type: ignore[arg-type]
    else:
        kind = {"int": int, "float": float, "str": str}[flag.kind]
        conv = _human_readable_int if flag.human_int else kind
        if flag.dest == "max_model_len":
            conv = _max_model_len
        parser.add_argument(*names, type=conv, choices=flag.choices, **common)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = _VllmParser(
        prog="vllm serve",
        description="Simulated `vllm serve` (tui-tuner): vLLM's flags, no GPU, modelled timing.",
        epilog="examples:\n"
        "  tui-tuner sim-serve /tmp/tiny-llama --port 8000\n"
        "  tui-tuner sim-serve meta-llama/Llama-3.1-8B --max-num-seqs 128 "
        "--sim-profile llama-8b-h100",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("model", help="model name or local directory (its tokenizer is used)")
    for flag in FLAGS:
        _add_flag(parser, flag)
    parser.add_argument(
        "--load-format",
        default="auto",
        type=str.lower,  # vLLM's LoadConfig lowercases it
        help="how weights are loaded; 'dummy' initialises them randomly (only the start-up "
        "differs in the simulator). Default: auto.",
    )
    sim = parser.add_argument_group("simulator (not vLLM flags)")
    sim.add_argument(
        "--sim-profile",
        default=DEFAULT_PROFILE,
        choices=sorted(PROFILES),
        help="simulated GPU and model",
    )
    sim.add_argument("--sim-profile-file", type=Path, help="YAML overrides of a profile")
    sim.add_argument(
        "--sim-time-scale",
        type=float,
        default=1.0,
        help="simulated seconds per wall second (10 = ten times faster)",
    )
    sim.add_argument(
        "--sim-startup-scale",
        type=float,
        default=None,
        help="speed-up of the start-up phases only (default: --sim-time-scale)",
    )
    sim.add_argument("--sim-seed", type=int, default=0, help="seed for generated text and noise")
    sim.add_argument(
        "--sim-gpu-busy-gib",
        type=float,
        default=0.0,
        help="memory already used on each GPU by other processes",
    )
    sim.add_argument(
        "--sim-noise",
        type=float,
        default=0.0,
        help="relative standard deviation of step times (0 = exact)",
    )
    sim.add_argument(
        "--sim-tokenizer",
        type=Path,
        default=None,
        help="count tokens with this directory's tokenizer.json (default: MODEL's, when MODEL "
        "is a directory); the served model keeps MODEL's name",
    )
    return parser


_O_LEVEL = re.compile(r"^-O(\d)$")
_DOTTED = re.compile(r"^(-cc|--compilation-config)\.([\w.]+)(\+?)(?:=(.*))?$")


def _normalise(argv: Sequence[str]) -> list[str]:
    """Rewrite vLLM's extra forms into plain argparse ones."""
    out: list[str] = []
    dotted: dict[str, object] = {}
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        i += 1
        if (m := _O_LEVEL.match(arg)) is not None:
            out += ["--optimization-level", m[1]]
            continue
        if (m := _DOTTED.match(arg)) is not None:
            key, append, value = m[2], m[3], m[4]
            if value is None:
                value = items[i] if i < len(items) else ""
                i += 1
            parsed: object
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
            if append:
                parsed = [
                    json.loads(v) if v.strip().lstrip("-").isdigit() else v
                    for v in value.split(",")
                ]
            dotted[key] = parsed
            continue
        if arg.startswith("--") and "_" in arg.split("=", 1)[0]:
            name, eq, rest = arg.partition("=")
            arg = name.replace("_", "-") + eq + rest
        out.append(arg)
    if dotted:
        out += ["--compilation-config", json.dumps(dotted)]
    return out


def parse(argv: Sequence[str]) -> tuple[ServeArgs, SimOptions, set[str]]:
    """Parse a `sim-serve` command line. Exits with code 2 on argparse errors, as vLLM does.

    Returns the flag values, the simulator's own options, and the dests the user set explicitly.
    """
    parser = build_parser()
    ns, extras = parser.parse_known_args(_normalise(argv))
    if extras:  # vLLM 0.33 reports these under the program name `vllm`
        parser.print_usage()
        parser.exit(2, f"vllm: error: unrecognized arguments: {' '.join(extras)}\n")
    values = {f.dest: getattr(ns, f.dest) for f in FLAGS if getattr(ns, f.dest) is not None}
    given = set(values)
    args = ServeArgs(model=ns.model, values=values)
    sim = SimOptions(
        profile=ns.sim_profile,
        profile_file=ns.sim_profile_file,
        time_scale=ns.sim_time_scale,
        startup_scale=ns.sim_time_scale if ns.sim_startup_scale is None else ns.sim_startup_scale,
        seed=ns.sim_seed,
        gpu_busy_gib=ns.sim_gpu_busy_gib,
        noise=ns.sim_noise,
        tokenizer=ns.sim_tokenizer,
        load_format=ns.load_format,
    )
    return args, sim, given
