from kfp import dsl

from . import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(
    model_name: str,
    alias: str,
    target: str,
    serving: dict,
    root: str,
    run_name: str,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
    seed: int,
) -> str:
    """Serve `models:/NAME@ALIAS`, answer one request over HTTP and save the answer as an HTML page; returns
    the page's URI. `target`: "local" (the predictor on 127.0.0.1 of this machine) or "kserve" (roll the
    alias's version out on the chart's InferenceService, which serves the alias; `serving` overrides its
    settings: name, namespace, ready_timeout; the chart's upload hook fills in its own)."""
    import os

    from duogen.components.pipeline.local_deploy import ask, serve_and_ask
    from duogen.platform import storage
    from duogen.platform.steps import once, run_identity, scratch, step_uri
    from duogen.platform.tracking import log_step

    run_name = run_identity(run_name, kfp_run_id)  # empty: this KFP run's own id

    if target not in ("local", "kserve"):
        raise ValueError(f"target must be 'local' or 'kserve', got {target!r}")
    env = {"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}
    model = f"models:/{model_name}@{alias}"
    uri = step_uri(root, run_name, f"deploy-{alias}")

    def work(out):
        if target == "local":
            cache = {"DUOGEN_MODEL_CACHE": str(scratch(root, run_name, "model-cache"))}  # this run's download
            answer = serve_and_ask(model, out / "answer.html", env=env | cache, seed=seed)
        else:
            from duogen.platform.inferenceservice import ServingSettings, deploy
            from duogen.platform.registry import alias_version

            settings = ServingSettings(**serving)
            version = alias_version(model, tracking_uri or None)
            url = deploy(model, settings, version)
            token = os.environ.get("DUOGEN_AUTH_TOKEN")
            headers = {"Authorization": f"Bearer {token}"} if token else None
            answer = ask(url, out / "answer.html", f"DuoGen answers over HTTP ({url})", seed, headers=headers)
            answer["version"] = version
        tags = {"model": model, "answer": answer["text"][:500], "url": answer["url"]}
        run = log_step(
            tracking_uri,
            experiment,
            f"deploy-{alias}",
            kfp_run_id,
            {"images": answer["images"]},
            tags=tags,
            artifacts=out,
        )
        return {**answer, "page": storage.join(uri, "answer.html"), "mlflow_run_id": run}

    answer = once(root, run_name, f"deploy-{alias}", work)
    print(f"answered over HTTP with {answer['images']} picture(s): {answer['text'][:200]!r}")
    return answer["page"]
