"""ensgan: ensembles of GANs as an MLOps batch pipeline."""
