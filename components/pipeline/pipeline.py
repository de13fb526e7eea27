"""The DuoGen pipeline, top to bottom as the data flows: toy world -> curation (fanned out over shards) ->
Stage 1 -> Stage 2 -> evaluation -> registration -> gated promotion -> deployment.

Every parameter has a default that works on the embedded toy world; on a cluster users set the storage
root (`s3://...`), the MLflow server, the launcher's nodes / GPUs / TP / FP8, steps and gates in the KFP UI.
"""

from kfp import dsl, kubernetes

from duogen.components.curation.registry import SOURCES
from duogen.components.training.config import recipe

from .curate_component import curate
from .dataset_manifest_component import dataset_manifest
from .deploy_component import deploy
from .evaluate_component import evaluate
from .plan_curation_component import plan_curation
from .promote_component import promote
from .register_component import register
from .toyworld_component import toyworld
from .train_component import train

DEFAULT_GATES = {"t_com": 0.5, "i_com": 0.9}
STAGE1, STAGE2 = recipe("stage1"), recipe("stage2")  # the parameters' defaults are the stages' recipes'

# `--from-scratch`: the toy preset with random weights in both parts: Stage 1 then trains the MLLM from
# nothing (the steps and lr that made it fluent before the pretrained MLLM shipped) and Stage 2 the whole DiT
FROM_SCRATCH = {"preset": "toy-scratch", "stage1_steps": 5000, "stage1_lr": 3e-3, "stage2_dit_lr_ratio": 1.0}
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")


def _on_cluster(task, s3_secret, retries: int = 0):
    """What a step's pod needs on a cluster (the local runner ignores it): the S3 credentials from the
    Secret, and retries for the steps that resume. The Secret is not optional: a pod without it does not
    start (CreateContainerConfigError naming the Secret) instead of running without credentials and failing
    later on an unsigned request. It must exist where KFP runs the pods (standalone KFP: `kubeflow`; the
    chart copies it there). With an IAM role (IRSA, workload identity) the Secret still has to exist: leave
    its AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY empty and botocore skips them (EnvProvider ignores an
    empty key) and takes the role."""
    kubernetes.use_secret_as_env(
        task, secret_name=s3_secret, secret_key_to_env={k: k for k in S3_ENV}, optional=False
    )
    if retries:
        task.set_retry(num_retries=retries, backoff_duration="60s")
    return task


@dsl.pipeline(
    name="duogen", description="Curate, train (Stage 1, Stage 2), evaluate, register, promote, deploy."
)
def duogen_pipeline(
    root: str = "outputs/pipeline",
    run_name: str = "",  # empty: the KFP run id (every UI run its own); `duogen run` passes "toy"
    tracking_uri: str = "",
    experiment: str = "duogen-pipeline",
    model_name: str = "duogen-toy",
    preset: str = "toy",
    pages: int = 60,
    videos: int = 8,
    sources: list[str] = list(SOURCES),  # the curation registry's
    shards: int = 2,
    synthetic_per_seed: int = 400,
    alignment_data: str = "",
    stage1_steps: int = STAGE1["steps"],  # a tuning of the shipped pretrained MLLM (README)
    stage1_lr: float = STAGE1["lr"],
    stage2_steps: int = STAGE2["steps"],
    stage2_lr: float = STAGE2["lr"],
    stage2_dit_lr_ratio: float = STAGE2["dit_lr_ratio"],  # the pretrained toy DiT: its connector aligns
    batch_size: int = STAGE1["batch_size"],
    nodes: int = 1,
    nproc_per_node: int = 2,
    gpus_per_node: int = 0,
    launcher: str = "local",
    cluster: dict = {},
    tp: int = 1,
    fp8: bool = False,
    eval_tasks: int = 40,
    gates: dict = DEFAULT_GATES,
    alias: str = "champion",
    deploy_model: bool = True,
    deploy_target: str = "local",
    serving: dict = {},
    s3_secret: str = "duogen-s3",
    seed: int = 0,
):
    tracking = dict(
        tracking_uri=tracking_uri, experiment=experiment, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER
    )
    world = toyworld(root=root, run_name=run_name, pages=pages, videos=videos, seed=seed, **tracking)
    _on_cluster(world, s3_secret).set_display_name("toy world")

    planned = plan_curation(
        world=world.output,
        run_name=run_name,
        sources=sources,
        shards=shards,
        synthetic_per_seed=synthetic_per_seed,
        alignment=alignment_data,
        seed=seed,
        kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
    _on_cluster(planned, s3_secret)
    with dsl.ParallelFor(planned.output, name="curation-parts") as item:
        part = curate(
            item=item,
            root=root,
            synthetic_per_seed=synthetic_per_seed,
            alignment=alignment_data,
            seed=seed,
        )
        _on_cluster(part, s3_secret, retries=2)
    manifest = dataset_manifest(parts=dsl.Collected(part.output), root=root, run_name=run_name, **tracking)
    _on_cluster(manifest, s3_secret)

    launch = dict(
        root=root,
        run_name=run_name,
        batch_size=batch_size,
        nodes=nodes,
        nproc_per_node=nproc_per_node,
        gpus_per_node=gpus_per_node,
        launcher=launcher,
        cluster=cluster,
        tp=tp,
        fp8=fp8,
        seed=seed,
        **tracking,
    )
    stage1 = train(
        stage="stage1",
        manifest=manifest.output,
        model=preset,
        steps=stage1_steps,
        lr=stage1_lr,
        **launch,
    )
    _on_cluster(stage1, s3_secret, retries=2).set_display_name("Stage 1 (MLLM)")
    stage2 = train(
        stage="stage2",
        manifest=manifest.output,
        model=stage1.outputs["model"],
        steps=stage2_steps,
        lr=stage2_lr,
        dit_lr_ratio=stage2_dit_lr_ratio,
        **launch,
    )
    _on_cluster(stage2, s3_secret, retries=2).set_display_name("Stage 2 (connector + DiT)")

    judged = evaluate(
        pair=stage2.outputs["model"],
        root=root,
        run_name=run_name,
        tasks=eval_tasks,
        seed=seed,
        **tracking,
    )
    _on_cluster(judged, s3_secret)
    registered = register(
        pair=stage2.outputs["model"],
        metrics=judged.outputs["metrics"],
        report=judged.outputs["report"],
        manifest=manifest.output,
        stage1_run=stage1.outputs["mlflow_run_id"],
        stage2_run=stage2.outputs["mlflow_run_id"],
        model_name=model_name,
        root=root,
        run_name=run_name,
        **tracking,
    )
    _on_cluster(registered, s3_secret)
    promoted = promote(
        name=registered.outputs["name"],
        version=registered.outputs["version"],
        alias=alias,
        gates=gates,
        root=root,
        run_name=run_name,
        **tracking,
    )
    _on_cluster(promoted, s3_secret)
    with dsl.If(deploy_model == True, name="deploy-on"):
        with dsl.If(promoted.output == True, name="promoted"):
            served = deploy(
                model_name=model_name,
                alias=alias,
                target=deploy_target,
                serving=serving,
                root=root,
                run_name=run_name,
                seed=seed,
                **tracking,
            )
            _on_cluster(served, s3_secret)
