"""Training: the run config, the trainer and its optimiser step, checkpoints, distributed
training and the run log.
"""
