from kfp import dsl

from . import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def dataset_manifest(
    parts: list[str], root: str, run_name: str, tracking_uri: str, experiment: str, kfp_run_id: str
) -> str:
    """Every curated part in one manifest (shard folders per source, counters): the training data's URI."""
    import json
    from collections import Counter

    from duogen.platform import storage
    from duogen.platform.steps import once, run_identity, step_uri
    from duogen.platform.tracking import log_step

    run_name = run_identity(run_name, kfp_run_id)  # empty: this KFP run's own id

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
