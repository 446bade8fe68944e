"""Datasets, augmentation and the batch container shared by detectors, trainer and distiller."""
