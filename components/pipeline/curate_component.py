from kfp import dsl

from . import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def curate(item: dict, root: str, synthetic_per_seed: int, alignment: str, seed: int) -> str:
    """One part of one source's curation (`item`: source, part, parts, world, run); returns a JSON record
    {source, uri, report}."""
    import json

    from duogen.components.curation.fanout import CurationPlan, curate_part
    from duogen.platform.steps import input_dir, once, step_uri

    world = str(input_dir(item["world"]))
    p = CurationPlan(world, synthetic_per_seed, str(input_dir(alignment)) if alignment else "", seed=seed)
    source, part, parts = item["source"], int(item["part"]), int(item["parts"])  # numbers arrive as floats
    step = f"curate-{source}-{part}of{parts}"
    run = item["run"]
    report = once(root, run, step, lambda out: curate_part(p, source, part, parts, out))
    return json.dumps({"source": source, "uri": step_uri(root, run, step), "report": report})
