"""Benchmarks for ``gazerm bench``: each times gazerm against a baseline run in the same invocation, on
the same data, and prints the ratio (absolute numbers depend on the machine; a ratio measured side by
side says what the design buys and survives a busy machine better).

- ``features``: gaze features and shard writing (``bench.features``);
- ``train``: training throughput, start-up and peak memory against TRL's ``RewardTrainer`` and a plain
  PyTorch loop (``bench.train``);
- ``packing``: a micro-batch's layouts (padding-free, the prompt computed once, both) against the padded
  one (``bench.packing``).

``bench.pairs`` reads a preference file's pairs the same way for all of them.
"""
