"""Evaluation: judges of the pair's answers (the toy-world judge on free-running and teacher-forced answers),
their reports, and the figures the pipeline's promotion gate reads."""
