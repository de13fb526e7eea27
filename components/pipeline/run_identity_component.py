from kfp import dsl

from . import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def run_identity(run_name: str, kfp_run_id: str) -> str:
    """This run's name for its folders, records and PyTorchJobs: `run_name`, or the KFP run's own id when it
    is empty (the UI's default), so two runs never share outputs, step records or training jobs."""
    from duogen.platform.steps import run_identity

    return run_identity(run_name, kfp_run_id)
