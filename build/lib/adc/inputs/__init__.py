"""Inputs: data sources, model specs and the zoo, reference training, calibration images, fine-tuning."""
