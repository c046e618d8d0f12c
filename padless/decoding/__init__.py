"""Decoding: search functions (greedy, beam, sampling), batched decoding of many sentences,
evaluation and text metrics.
"""
