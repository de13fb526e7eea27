from kfp import dsl

from . import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def plan_curation(
    world: str,
    run_name: str,
    sources: list[str],
    shards: int,
    synthetic_per_seed: int,
    alignment: str,
    seed: int,
) -> list[dict]:
    """The fan-out: up to `shards` parts per source (one task each). Each item carries the world's URI:
    KFP's local runner hands a task inside a ParallelFor the loop item in place of any other task's output."""
    from duogen.components.curation.fanout import CurationPlan, parts
    from duogen.platform.steps import input_dir

    local = CurationPlan(
        str(input_dir(world)), synthetic_per_seed, str(input_dir(alignment)) if alignment else "", seed=seed
    )
    return [{**item, "world": world} for item in parts(local, sources, shards)]


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def curate(item: dict, root: str, run_name: str, synthetic_per_seed: int, alignment: str, seed: int) -> str:
    """One part of one source's curation (`item`: source, part, parts, world); returns a JSON record
    {source, uri, report}."""
    import json

    from duogen.components.curation.fanout import CurationPlan, curate_part
    from duogen.platform.steps import input_dir, once, step_uri

    world = str(input_dir(item["world"]))
    p = CurationPlan(world, synthetic_per_seed, str(input_dir(alignment)) if alignment else "", seed=seed)
    source, part, parts = item["source"], int(item["part"]), int(item["parts"])  # numbers arrive as floats
    step = f"curate-{source}-{part}of{parts}"
    report = once(root, run_name, step, lambda out: curate_part(p, source, part, parts, out))
    return json.dumps({"source": source, "uri": step_uri(root, run_name, step), "report": report})


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def dataset_manifest(
    parts: list[str], root: str, run_name: str, tracking_uri: str, experiment: str, kfp_run_id: str
) -> str:
    """Every curated part in one manifest (shard folders per source, counters): the training data's URI."""
    import json
    from collections import Counter

    from duogen.platform import storage
    from duogen.platform.steps import once, step_uri
    from duogen.platform.tracking import log_step

    sources: dict = {}
    counters: dict = {}
    for text in parts:
        part = json.loads(text)
        sources.setdefault(part["source"], []).append(part["uri"])
        counters[part["source"]] = dict(
            Counter(counters.get(part["source"], {})) + Counter(part["report"]["counters"])
        )
    manifest = {"sources": {k: sorted(v) for k, v in sorted(sources.items())}, "counters": counters}

    def work(out):
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
        metrics = {f"{source}.{k}": v for source, c in counters.items() for k, v in c.items()}
        run = log_step(tracking_uri, experiment, "curation", kfp_run_id, metrics=metrics, artifacts=out)
        return {
            "manifest": storage.join(step_uri(root, run_name, "dataset"), "manifest.json"),
            "mlflow_run_id": run,
        }

    return once(root, run_name, "dataset", work)["manifest"]
