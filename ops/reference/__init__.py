"""Slow, obviously-correct pure-PyTorch/NumPy references of the native ops, used by the tests.

Never called by the library itself: a missing compiled op is an error, not a fallback.
"""
