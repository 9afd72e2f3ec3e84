"""Benchmarks for ``gazerm bench``: each times gazerm against a baseline run in the same invocation, on
the same data, and prints the ratio (absolute numbers depend on the machine; a ratio measured side by
side says what the design buys and survives a busy machine better).

- ``features``: gaze features and shard writing (``bench.features``);
- ``train``: training throughput, start-up and peak memory against TRL's ``RewardTrainer`` and a plain
  PyTorch loop (``bench.train``);
- ``packing``: padding-free micro-batches against padded ones on a length-skewed set (``bench.packing``).
"""
