"""GANs: architectures, losses, real-image samplers, the training loop, checkpoints, members."""
