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
    tp: int,
    fp8: bool,
    seed: int,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
) -> NamedTuple("Trained", model=str, mlflow_run_id=str):
    """Stage 1 (MLLM) or Stage 2 (connector + DiT) on the manifest's shards; `model` is a preset name or a
    previous stage's model URI. Returns the exported model's URI and the stage's MLflow run id."""
    from collections import namedtuple

    from duogen.components.training.config import TrainConfig
    from duogen.components.training.stage_job import manifest_shards, train_stage
    from duogen.platform import storage
    from duogen.platform.steps import input_dir, once, step_uri

    uri = step_uri(root, run_name, stage)
    if storage.is_url(model):
        model = str(input_dir(model, run_name, f"{stage}-model"))

    def work(out):
        shards = manifest_shards(
            manifest, stage, lambda u: input_dir(u, run_name, u.rstrip("/").rsplit("/", 1)[-1])
        )
        stage2 = stage == "stage2"
        cfg = TrainConfig(
            stage=stage,
            model=model,
            shards=shards,
            out=str(out),
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            warmup_steps=10 if stage2 else 5,
            mix={"synthetic": 0.75, "web": 0.2, "video": 0.05, "alignment": 0.25} if stage2 else {},
            seed=seed,
            log_every=20,
            ckpt_every=50,
            tp=tp,
            fp8="delayed" if fp8 else None,
            checkpoint_dir=storage.join(uri, "checkpoints") if storage.is_url(uri) else None,
            tracking_uri=tracking_uri or None,
            experiment=experiment,
            pipeline_run_id=kfp_run_id,
        )
        result = train_stage(cfg, nproc=nodes * nproc_per_node)  # GPUs: the cluster launcher's limits
        return {**result, "model": storage.join(uri, "model")}

    out = once(root, run_name, stage, work)
    return namedtuple("Trained", ["model", "mlflow_run_id"])(out["model"], out["mlflow_run_id"] or "")
