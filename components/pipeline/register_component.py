from typing import NamedTuple

from kfp import dsl

from . import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(
    pair: str,
    metrics: dict,
    report: str,
    manifest: str,
    stage1_run: str,
    stage2_run: str,
    model_name: str,
    root: str,
    run_name: str,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
) -> NamedTuple("Registered", name=str, version=str):
    """The exported pair as a new version of `model_name`, carrying its eval metrics and lineage (once per
    pipeline run: a rerun finds the version it registered)."""
    from collections import namedtuple

    from duogen.platform.registry import register_pair
    from duogen.platform.steps import input_dir, once, run_identity

    run_name = run_identity(run_name, kfp_run_id)  # empty: this KFP run's own id

    lineage = {"dataset_manifest": manifest, "stage1_run": stage1_run, "stage2_run": stage2_run}
    lineage |= {"eval_report": report, "kfp_run_id": kfp_run_id, "pair": pair}

    def work(out):
        local = input_dir(pair)
        r = register_pair(
            local, model_name, metrics, lineage, f"{root}#{run_name}", tracking_uri or None, experiment
        )
        return {"name": r.name, "version": r.version, "source": r.source, "created": r.created}

    out = once(root, run_name, "register", work)
    return namedtuple("Registered", ["name", "version"])(out["name"], str(out["version"]))
