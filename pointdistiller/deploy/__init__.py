"""Deployment of a trained student: ``export`` (torch) writes a bundle of an ONNX network and its
settings; ``runtime`` (numpy, numba and onnxruntime only, no torch) detects with it."""
