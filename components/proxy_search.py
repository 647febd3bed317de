"""proxy_search: choose PTLoss coefficients whose proxy teacher scores best on validation."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def proxy_search(
    config: str,
    run_info: Input[Artifact],
    validation: Input[Dataset],
    validation_probs: Input[Dataset],
    search: Output[Artifact],
    summary: Output[Markdown],
):
    """Search the coefficients; the chosen eps and the candidate table go to ``search``."""
    from pathlib import Path

    from components._common import step_inputs
    from ptdistill.steps.search import proxy_search as step

    result = step(*step_inputs(config, run_info), Path(validation.path), Path(validation_probs.path),
                  Path(search.path))
    search.metadata.update({k: v for k, v in result.items() if k != "eps"})
    Path(summary.path).write_text(
        f"**Proxy search** ({result['strategy']}, criterion {result['criterion']}): order {result['order']}, "
        f"score {result['score']:.5g}; validation TVD teacher {result['teacher_tvd']:.4f} -> proxy "
        f"{result['proxy_tvd']:.4f}; the proxy overturns {result['proxy_flips']:.4f} of the teacher's "
        f"{result['validation_rows']} validation decisions\n" + "".join(f"\n⚠ {note}\n" for note in result["warnings"])
    )
