"""Inputs: image sources and reading, image files on disk, segmentation datasets, synthetic
shapes. No models here."""
