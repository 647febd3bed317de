"""The container images the components run in: the one place that names them.

Override at compile time with ``PTDISTILL_CPU_IMAGE`` / ``PTDISTILL_GPU_IMAGE`` (the image
build script prints the references it pushed).  kfp.local's SubprocessRunner ignores them.
"""

import os

CPU_IMAGE = os.environ.get("PTDISTILL_CPU_IMAGE", "ghcr.io/ptdistill/ptdistill-cpu:0.1.0")
GPU_IMAGE = os.environ.get("PTDISTILL_GPU_IMAGE", "ghcr.io/ptdistill/ptdistill-gpu:0.1.0")
