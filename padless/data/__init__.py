"""Data: corpus readers, text normalisation and tokenisation, the vocabulary, the prepare
pipeline, prepared datasets, the length-bucketed sampler and the :class:`~padless.data.batch.Batch`.
"""
