"""The defaults that several layers share: where runs, tracking and cached objects go when the user
names none. The one place that spells them (the CLI, the local runner, remote submission and the
compiled pipeline's parameters all read them from here).

Nothing here is read from the environment at import time: the environment variables are named,
and the code that applies a default reads them when it runs.
"""

from __future__ import annotations

#: File name of the default MLflow tracking database (SQLite), relative to where it is opened.
TRACKING_DB = "mlflow.db"
#: Default MLflow tracking URI: ``mlflow.db`` in the working directory.
TRACKING_URI = f"sqlite:///{TRACKING_DB}"
#: Environment variable that, when set, replaces :data:`TRACKING_URI` (MLflow's own name for it).
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
#: Default pipeline root of a local run, and the default artifact store of every run: ``./runs``.
PIPELINE_ROOT = "runs"
#: Environment variable: the folder under which objects read from object storage are cached.
CACHE_ENV = "PTDISTILL_CACHE"
#: The cache folder when :data:`CACHE_ENV` is unset, under the home folder.
CACHE_DIR = ".cache/ptdistill"
#: Where ``mlflow ui`` listens by default (the address printed for a local tracking store).
UI_URL = "http://127.0.0.1:5000"
