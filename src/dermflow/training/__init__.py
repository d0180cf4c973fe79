"""The GPU engine every learning stage shares (device claim, distributed, batches on the
device, the training loop) and the first learnt stages: the baseline and its attention maps."""
