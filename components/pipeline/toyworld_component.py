from kfp import dsl

from . import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def toyworld(
    root: str,
    run_name: str,
    pages: int,
    videos: int,
    seed: int,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
) -> str:
    """The embedded toy world: noisy how-to pages and videos with their ground truth. Returns its URI."""
    from duogen.components.toyworld.pages import make_site
    from duogen.components.toyworld.videos import make_videos
    from duogen.platform.steps import once, run_identity, step_uri
    from duogen.platform.tracking import log_step

    run_name = run_identity(run_name, kfp_run_id)  # empty: this KFP run's own id

    def work(out):
        make_site(out, pages, seed=seed, corrupt_pages=max(1, pages // 20))
        make_videos(out, videos, seed=seed)
        params = {"pages": pages, "videos": videos, "seed": seed}
        return {
            **params,
            "mlflow_run_id": log_step(tracking_uri, experiment, "toyworld", kfp_run_id, params=params),
        }

    once(root, run_name, "toyworld", work)
    return step_uri(root, run_name, "toyworld")
