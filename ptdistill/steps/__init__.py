"""The pipeline's steps as plain functions over files: what each KFP component calls.

Each step reads its inputs from local paths, does the work with the ``ptdistill`` library
and writes its outputs to the paths it is given, so it runs the same under ``kfp.local``,
on a cluster, or straight from Python and the tests.
"""
