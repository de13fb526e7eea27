"""Fixtures shared by several test modules: toy-world shards (training), a saved tiny pair (serving)."""

import pytest

from duogen.components.curation.executor import plan, run_stage
from duogen.components.curation.synthetic import plan_instructions, synthetic_stage


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Six toy-world dialogues curated into 3 shards by the synthetic stage: a module's training data."""
    out = tmp_path_factory.mktemp("shards")
    inputs = [i for i in plan_instructions(per_seed=1, seed=0) if i["domain"] == "shapes on a canvas"][:6]
    run_stage(synthetic_stage, plan(inputs, 3), out, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    """A saved random tiny pair (seed 0): what the serving tests serve."""
    from duogen.model.pair import DuoGenPair
    from duogen.model.presets import get_preset

    path = tmp_path_factory.mktemp("pair") / "tiny"
    DuoGenPair.build(get_preset("tiny"), seed=0).save_pretrained(path)
    return path
