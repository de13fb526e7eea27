from typing import NamedTuple

from kfp import dsl

from . import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    pair: str,
    root: str,
    run_name: str,
    tasks: int,
    seed: int,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
) -> NamedTuple("Evaluated", report=str, metrics=dict):
    """The toy-world judge on the pair's free-running answers: the report's URI and the metric means."""
    from collections import namedtuple

    from duogen.components.evaluation.report import log_to_mlflow, write_report
    from duogen.components.evaluation.toyworld_eval import ToyEvalConfig, evaluate_free_running
    from duogen.model.pair import DuoGenPair
    from duogen.platform.steps import input_dir, once, run_identity, step_uri

    run_name = run_identity(run_name, kfp_run_id)  # empty: this KFP run's own id

    def work(out):
        model = DuoGenPair.from_pretrained(input_dir(pair))
        result = evaluate_free_running(model, ToyEvalConfig(tasks=tasks, seed=seed))
        write_report(result, out, f"Toy-world evaluation ({run_name})")
        metrics = {k: v["mean"] for k, v in result["summary"].items() if v["n"] > 0}
        run_id = None
        if tracking_uri:
            run_id = log_to_mlflow(
                result, out, tracking_uri, experiment, "evaluate", {"pipeline_run_id": kfp_run_id}
            )
        return {"metrics": metrics, "mlflow_run_id": run_id}

    out = once(root, run_name, "evaluate", work)
    uri = step_uri(root, run_name, "evaluate")
    return namedtuple("Evaluated", ["report", "metrics"])(f"{uri}/report.html", out["metrics"])
