from kfp import dsl

from . import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote(
    name: str,
    version: str,
    alias: str,
    gates: dict,
    root: str,
    run_name: str,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
) -> bool:
    """Move `alias` to the version only if every gate (metric >= threshold) passes; True when it did."""
    from duogen.platform.registry import promote as promote_version
    from duogen.platform.steps import once, run_identity
    from duogen.platform.tracking import log_step

    run_name = run_identity(run_name, kfp_run_id)  # empty: this KFP run's own id

    def work(out):
        thresholds = {k: float(v) for k, v in gates.items()}
        decision = promote_version(name, version, alias, thresholds, tracking_uri or None).to_dict()
        verdict = "promoted" if decision["promoted"] else "rejected: " + "; ".join(decision["reasons"])
        tags = {"model": f"{name}/{version}", "alias": alias, "verdict": verdict}
        run = log_step(tracking_uri, experiment, f"promote-{alias}", kfp_run_id, params=thresholds, tags=tags)
        return {**decision, "verdict": verdict, "mlflow_run_id": run}

    decision = once(root, run_name, f"promote-{alias}", work)
    print(decision["verdict"])
    return bool(decision["promoted"])
