"""The training engine: tasks, parallel step wrappers, loop, checkpoints, logging."""
