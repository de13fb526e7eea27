from typing import NamedTuple

from kfp import dsl

from . import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(
    stage: str,
    manifest: str,
    model: str,
    root: str,
    run_name: str,
    steps: int,
    lr: float,
    batch_size: int,
    nodes: int,
    nproc_per_node: int,
    gpus_per_node: int,
    launcher: str,
    cluster: dict,
    tp: int,
    fp8: bool,
    seed: int,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
    dit_lr_ratio: float = 0.0,
) -> NamedTuple("Trained", model=str, mlflow_run_id=str):
    """Stage 1 (MLLM) or Stage 2 (connector + DiT) on the manifest's shards; `model` is a preset name or a
    previous stage's model URI; `dit_lr_ratio`: Stage 2 trains the DiT's own layers at lr x this, its
    connector at lr. `launcher`: "local" (torchrun here) or "pytorchjob" (a PyTorchJob in the cluster;
    `cluster` overrides its settings: image, namespace, node_selector, tolerations, s3_secret, ...).
    Returns the exported model's URI and the stage's MLflow run id."""
    import dataclasses
    from collections import namedtuple

    from duogen.components.training.config import load_config
    from duogen.components.training.stage_job import manifest_shards, train_stage
    from duogen.platform import storage
    from duogen.platform.steps import once, run_identity, step_uri

    run_name = run_identity(run_name, kfp_run_id)  # empty: this KFP run's own id

    uri = step_uri(root, run_name, stage)
    if launcher not in ("local", "pytorchjob"):
        raise ValueError(f"launcher must be 'local' or 'pytorchjob', got {launcher!r}")
    if launcher == "pytorchjob" and not storage.is_url(root):
        raise ValueError(
            "the pytorchjob launcher needs an object-store root (s3://...): pods do not share this disk"
        )

    def work(out):
        # the stage's recipe (components/training/recipes), the pipeline's parameters over it
        cfg = load_config(stage=stage)
        cfg = dataclasses.replace(
            cfg,
            model=model,
            shards=manifest_shards(manifest, stage),  # URIs: a local copy is made where training runs
            out=str(out),
            steps=steps,
            lr=lr,
            dit_lr_ratio=dit_lr_ratio if stage == "stage2" else cfg.dit_lr_ratio,
            batch_size=batch_size,
            seed=seed,
            tp=tp,
            fp8="delayed" if fp8 else None,
            checkpoint_dir=storage.join(uri, "checkpoints") if storage.is_url(uri) else None,
            tracking_uri=tracking_uri or None,
            experiment=experiment,
            pipeline_run_id=kfp_run_id,
        )
        if launcher == "local":
            result = train_stage(cfg, nproc=nodes * nproc_per_node)
            return {**result, "model": storage.join(uri, "model")}
        from duogen.components.training.run import result_from_summary
        from duogen.platform.pytorchjob import ClusterSettings, job_name, launch

        settings = ClusterSettings(
            **{**cluster, "nodes": nodes, "nproc_per_node": nproc_per_node, "gpus_per_node": gpus_per_node}
        )
        pods = dataclasses.replace(
            cfg,
            out="/tmp/duogen-train",
            export_uri=storage.join(uri, "model"),
            result_uri=storage.join(uri, "result.json"),
        )
        # every pod runs torchrun (the operator's PET_* variables) over this program in each process
        program = ["-m", "duogen.cli", "train", stage, "--quiet", *(f"--set={o}" for o in pods.overrides())]
        name = job_name(run_name, stage)
        labels = {"duogen/stage": stage}

        def on_cluster(c):
            return result_from_summary(launch(name, program, settings, c.result, labels))

        result = train_stage(pods, launcher=on_cluster)
        return {**result, "model": storage.join(uri, "model"), "pytorchjob": name}

    out = once(root, run_name, stage, work)
    return namedtuple("Trained", ["model", "mlflow_run_id"])(out["model"], out["mlflow_run_id"] or "")
