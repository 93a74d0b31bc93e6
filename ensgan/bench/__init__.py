"""Benchmarks of the package's GANs and ensembles, outside the pipeline (`ensgan bench ...`).

- `modes`: mode collapse under PacGAN's protocol (ensgan.bench.modes), with its datasets
  (`datasets`, `toy`, `digits`), measures (`mode_count`) and rows (`methods.METHODS`).
"""
