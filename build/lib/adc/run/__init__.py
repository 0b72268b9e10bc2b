"""A run of adc on disk: the settings (config), the run folder, the search pipeline, fine-tuning, reports."""
