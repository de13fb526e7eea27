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
    kfp_run_id: str,
) -> list[dict]:
    """The fan-out: up to `shards` parts per source (one task each). Each item carries the world's URI and
    the run's name: KFP's local runner hands a task inside a ParallelFor the loop item in place of any other
    task's output."""
    from duogen.components.curation.fanout import CurationPlan, parts
    from duogen.platform.steps import input_dir, run_identity

    local = CurationPlan(
        str(input_dir(world)), synthetic_per_seed, str(input_dir(alignment)) if alignment else "", seed=seed
    )
    run = run_identity(run_name, kfp_run_id)  # empty: this KFP run's own id
    return [{**item, "world": world, "run": run} for item in parts(local, sources, shards)]
