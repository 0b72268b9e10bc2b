"""An example reward plugin: ``adc search --reward examples/my_rewards.py:reward``."""


def reward(m: dict) -> float:
    """Top-1 accuracy, preferring fewer parameters at equal accuracy.

    ``m`` is the metrics record: top1, top5, loss, and macs / flops / params with
    ``original_<key>`` and ``<key>_ratio`` (fraction of the unpruned model).
    """
    return m["top1"] - 0.1 * m["params_ratio"]
