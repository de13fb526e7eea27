"""The `duogen` CLI as a user runs it: a real subprocess of the installed entry point."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

DUOGEN = shutil.which("duogen", path=str(Path(sys.executable).parent)) or "duogen"


def run(*args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([DUOGEN, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def _leaves(parser, path=()):
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _leaves(sub, (*path, name))


# commands that share a handler on purpose: one function with a kind, and `run` = `pipeline run --local`
SHARED = {
    "cmd_pretrain": {("pretrain", "mllm"), ("pretrain", "dit")},
    "cmd_run": {("run",), ("pipeline", "run")},
}


def test_every_command_has_its_own_handler_and_describes_itself():
    """Fails when a subcommand is wired to another command's handler (a copied `set_defaults`), has none,
    or comes without a description for its `--help`."""
    from duogen.cli import build_parser

    handlers: dict[str, set] = {}
    for path, parser in _leaves(build_parser()):
        assert parser.prog == "duogen " + " ".join(path)
        func = parser.get_default("func")
        assert func is not None and func.__name__.startswith("cmd_"), path
        assert (parser.description or "").strip(), f"{path}: no description"
        handlers.setdefault(func.__name__, set()).add(path)
    for name, paths in handlers.items():
        assert len(paths) == 1 or paths == SHARED.get(name), (name, paths)
    assert {p[0] for ps in handlers.values() for p in ps} >= {"curate", "train", "serve", "pipeline", "run"}


def test_help_runs_from_the_installed_entry_point():
    """The console script itself (not only the parser): top-level help lists the commands; a nested help
    names its command."""
    top = run("--help")
    assert top.returncode == 0 and all(c in top.stdout for c in ("curate", "train", "serve", "pipeline"))
    nested = run("curate", "web", "--help")
    assert nested.returncode == 0 and nested.stdout.startswith("usage: duogen curate web")


def test_info_counts_parts_of_the_production_preset():
    res = run("info", "--preset", "duogen-7b-2b", "--json")
    assert res.returncode == 0, res.stderr
    parts = json.loads(res.stdout)["parameters"]
    assert parts["mllm_language"] + parts["mllm_vision"] == 8_292_166_656  # Qwen2.5-VL-7B
    assert parts["connector"] == 100352 * 1024 + 1024
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")


def test_unknown_preset_is_a_clear_error():
    res = run("info", "--preset", "huge")
    assert res.returncode != 0 and "unknown preset 'huge'" in res.stderr


def test_the_main_job_starts_from_the_pretrained_parts_unless_from_scratch():
    from duogen.cli import build_parser
    from duogen.cli.pipeline import run_overrides
    from duogen.components.pipeline.pipeline import duogen_pipeline
    from duogen.model.presets import get_preset

    parser = build_parser()
    default = run_overrides(parser.parse_args(["run"]))
    assert default == {"run_name": "toy"}  # the pipeline's own defaults: toy preset, pretrained parts
    parameters = duogen_pipeline.pipeline_spec.root.input_definitions.parameters
    assert parameters["preset"].default_value.string_value == "toy"
    assert parameters["stage2_dit_lr_ratio"].default_value.number_value == 0.0  # its connector aligns alone
    short = parameters["stage1_steps"].default_value.number_value
    assert (get_preset("toy").mllm_init, get_preset("toy").dit_init) == ("toy", "toy")
    for argv in (["run", "--from-scratch"], ["pipeline", "run", "--local", "--from-scratch"]):
        scratch = run_overrides(parser.parse_args(argv))
        assert scratch["preset"] == "toy-scratch" and scratch["stage2_dit_lr_ratio"] == 1.0  # it trains whole
        assert scratch["stage1_steps"] > 4 * short  # a random MLLM learns to write; a pretrained one tunes
    assert (get_preset("toy-scratch").mllm_init, get_preset("toy-scratch").dit_init) == (None, None)
    chosen = run_overrides(parser.parse_args(["run", "--from-scratch", "--set", "stage2_dit_lr_ratio=0.5"]))
    assert chosen["stage2_dit_lr_ratio"] == 0.5


def test_demo_writes_an_interleaved_page(tmp_path):
    res = run("demo", "--out", str(tmp_path / "demo"), "--quiet", "--images", "2", "--max-new-tokens", "30")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["images"] == 2
    page = Path(summary["page"]).read_text()
    assert page.count("<img ") == 2 and "move the red circle" in page
    assert (tmp_path / "demo" / "page_image_01.png").exists() and (
        tmp_path / "demo" / "page_image_02.png"
    ).exists()
    # the saved model loads back and runs the same demo
    again = run(
        "demo", "--model", str(tmp_path / "demo" / "model"), "--out", str(tmp_path / "again"), "--quiet"
    )
    assert again.returncode == 0, again.stderr
    a = (tmp_path / "demo" / "page_image_01.png").read_bytes()
    assert a == (tmp_path / "again" / "page_image_01.png").read_bytes()


def test_demo_with_a_missing_model_dir_fails_clearly(tmp_path):
    res = run("demo", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--quiet")
    assert res.returncode == 2
    assert "duogen_config.json is missing" in res.stderr


def test_generate_answers_with_a_saved_pair_and_input_image(tmp_path):
    from PIL import Image

    made = run("demo", "--out", str(tmp_path / "demo"), "--quiet", "--images", "1", "--max-new-tokens", "4")
    assert made.returncode == 0, made.stderr
    Image.new("RGB", (96, 48), "red").save(tmp_path / "in.png")
    res = run(
        "generate",
        "--model",
        str(tmp_path / "demo" / "model"),
        "--prompt",
        "Move it right.",
        "--image",
        str(tmp_path / "in.png"),
        "--out",
        str(tmp_path / "ans" / "answer.html"),
        "--force-bov",
        "--images",
        "1",
        "--max-new-tokens",
        "6",
        "--steps",
        "3",
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["images"] == 1 and summary["vae_encodes"] == 2  # the input image and the drawn one, once
    page = (tmp_path / "ans" / "answer.html").read_text()
    assert page.count("<img ") == 2  # the user's image and the drawn one
    drawn = Image.open(tmp_path / "ans" / "answer_image_02.png")
    assert drawn.size == (96, 48)  # a drawing follows the size of the last image
    bad = run(
        "generate",
        "--model",
        str(tmp_path / "demo" / "model"),
        "--prompt",
        "x",
        "--image",
        str(tmp_path / "missing.png"),
        "--out",
        str(tmp_path / "x.html"),
        "--quiet",
    )
    assert bad.returncode == 2 and "cannot read image" in bad.stderr
