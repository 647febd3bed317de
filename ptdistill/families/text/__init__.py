"""Text classification: splits of sentences (pairs), Hugging Face teachers and students.

``split`` holds :class:`TextSplit`; ``data`` the task loaders and the paper's split protocol;
``scoring`` teacher inference (classification heads and verbalizers); ``trainer`` the
fine-tuning / distillation loop with checkpoints; ``models`` loading and deriving checkpoints.
"""
