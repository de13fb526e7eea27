from kfp import dsl

from . import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(
    model_name: str,
    alias: str,
    root: str,
    run_name: str,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
    seed: int,
) -> str:
    """Serve `models:/NAME@ALIAS` with the project's predictor on this machine, answer one request over
    HTTP, and save the answer as an HTML page; returns the page's URI."""
    from duogen.components.serving.local_deploy import serve_and_ask
    from duogen.platform import storage
    from duogen.platform.steps import once, scratch, step_uri
    from duogen.platform.tracking import log_step

    env = {"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}

    uri = step_uri(root, run_name, f"deploy-{alias}")

    def work(out):
        cache = {"DUOGEN_MODEL_CACHE": str(scratch(root, run_name, "model-cache"))}  # this run's download
        answer = serve_and_ask(
            f"models:/{model_name}@{alias}", out / "answer.html", env=env | cache, seed=seed
        )
        tags = {"model": f"models:/{model_name}@{alias}", "answer": answer["text"][:500]}
        metrics = {"images": answer["images"]}
        run = log_step(
            tracking_uri, experiment, f"deploy-{alias}", kfp_run_id, metrics, tags=tags, artifacts=out
        )
        return {**answer, "page": storage.join(uri, "answer.html"), "mlflow_run_id": run}

    answer = once(root, run_name, f"deploy-{alias}", work)
    print(f"answered over HTTP with {answer['images']} picture(s): {answer['text'][:200]!r}")
    return answer["page"]
