"""The training worker that runs in the trainer image: ``python -m arkor_ops.worker``."""
