"""The run directory: what ``padless train`` writes and every other command reads.

- :mod:`padless.runs.directory`: :class:`~padless.runs.directory.RunDirectory`, the paths of a
  run, which files it owns, its lock, and the check that a directory is padless's own;
- :mod:`padless.runs.info`: ``run.json`` (the ownership marker, the data, the precision);
- :mod:`padless.runs.checkpoint`: :class:`~padless.runs.checkpoint.Checkpoint`, the only code
  that knows the checkpoint format, and :class:`~padless.runs.checkpoint.TrainState`;
- :mod:`padless.runs.loading`: :func:`~padless.runs.loading.load_model`, a trained model for
  decoding;
- :mod:`padless.runs.kept`: the checkpoints kept by ``train.keep_best`` / ``keep_last`` and
  their average; :mod:`padless.runs.averaging`: ``padless average``.

This layer sits below training and decoding: training writes through it, decoding, serving
and the commands read through it, and none of them needs the other.
"""
