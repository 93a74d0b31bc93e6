"""Files in and out: atomic writes, cards, images, object storage and published batches."""
