"""Training: callbacks (EMA, grids, checkpoints, preemption, evaluation), run folders, loggers, LR schedules."""
