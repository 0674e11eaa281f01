"""A simulated study whose model is not a local directory: the generated tiny model lends only
its tokenizer, the study says so at start, and the export names the model the user gave."""

from __future__ import annotations

from pathlib import Path

from tests.test_export import _record
from tui_tuner.report.export import export_best
from tui_tuner.sim.args import parse
from tui_tuner.study_dir import tune_setup


def _sim_study(tmp_path: Path, model: str) -> Path:
    config = tmp_path / "sim.yaml"
    config.write_text(
        "study: {name: named, n_trials: 2}\n"
        f"server: {{command: [tui-tuner, sim-serve], model: '{model}'}}\n"
        "search_space: {max_num_seqs: {options: [8, 16]}}\n"
    )
    return config


def test_a_missing_model_directory_is_said_and_the_export_keeps_its_name(tmp_path: Path) -> None:
    missing = str(tmp_path / "models" / "llama-8b")
    setup = tune_setup(_sim_study(tmp_path, missing), study_dir=tmp_path / "s", overrides={})
    server = setup.config.server
    assert server.model == missing
    tokenizer = server.extra_args[server.extra_args.index("--sim-tokenizer") + 1]
    assert (Path(tokenizer) / "tokenizer.json").is_file()
    assert setup.config.workload.tokenizer == tokenizer  # GuideLLM's, offline
    [notice] = setup.notices
    assert notice.level == "warning"
    assert notice.text.startswith(f"server.model {missing} does not exist: ")
    assert "tiny model" in notice.text
    records = [_record(0, 500.0, baseline=True), _record(1, 600.0, {"max_num_seqs": 16})]
    exported = export_best(setup.config, records, tmp_path / "s")
    assert exported is not None
    assert exported.command == f"vllm serve {missing} --max-num-seqs 16"
    assert tokenizer not in exported.command_path.read_text()


def test_a_model_name_is_an_info_notice(tmp_path: Path) -> None:
    setup = tune_setup(_sim_study(tmp_path, "org/model-8b"), study_dir=tmp_path / "s", overrides={})
    assert setup.config.server.model == "org/model-8b"
    [notice] = setup.notices
    assert notice.level == "info"
    assert notice.text.startswith("server.model org/model-8b is not a local directory: ")


def test_a_model_directory_lends_itself(tmp_path: Path, tiny_model: Path) -> None:
    setup = tune_setup(
        _sim_study(tmp_path, str(tiny_model)), study_dir=tmp_path / "s", overrides={}
    )
    assert setup.notices == ()
    assert "--sim-tokenizer" not in setup.config.server.extra_args


def test_the_simulator_takes_a_tokenizer_apart_from_the_model(tiny_model: Path) -> None:
    args, sim, _ = parse(["org/model-8b", "--sim-tokenizer", str(tiny_model)])
    assert args.model == "org/model-8b"
    assert sim.tokenizer == tiny_model
