"""Training engine: one-cycle schedule, checkpoints with exact resume, distributed helpers, and the
one trainer used for teachers, plain students and distilled students."""
