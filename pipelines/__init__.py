"""The pipeline layer: the distillation DAG built once (``dag``), run locally (``local``), compiled,
submitted and scheduled (``remote``), and the commands that do it (``cli``, added to ``ptdistill``
through an entry point). Every module but ``cli`` needs the ``pipelines`` extra."""
