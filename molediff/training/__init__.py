"""molediff.training: the generic trainer shared by every model.

Modules (import what you need; nothing is imported here):

- :mod:`~molediff.training.config` - YAML config dataclasses and validation
- :mod:`~molediff.training.registry` - task names -> lazily imported factories
- :mod:`~molediff.training.task` - the :class:`~molediff.training.task.Task` protocol
- :mod:`~molediff.training.trainer` - :class:`~molediff.training.trainer.Trainer`
- :mod:`~molediff.training.checkpoint` - atomic safetensors + JSON checkpoints
- :mod:`~molediff.training.ema` - exponential moving average of weights
- :mod:`~molediff.training.distributed` - torchrun / DDP helpers, sharded batches
- :mod:`~molediff.training.export` - ``model.safetensors`` + ``model.json`` for shipping
- :mod:`~molediff.training.cli` - ``molediff train``
"""
