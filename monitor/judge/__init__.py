"""Safety judges: turn an embedded prompt/response pair into calibrated harm verdicts."""
