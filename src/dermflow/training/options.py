"""The names the training loop's options take in the config, torch-free: config validation
reads them while the workflow plans (the schema's enums), so these tables are the one list of
each option's choices. Each names what implements its choices, and tests/test_config.py holds
the two equal where the implementation is a table: ``augmentation.AUGMENTATIONS``
(training policies), ``tta.VIEWS`` (test-time views) and ``loop.OPTIMIZERS``; the loop's
epoch order branches on the two samplings. The learning-rate schedules are
``schedules.SCHEDULES``, torch-free itself.
"""

from __future__ import annotations

AUGMENTATIONS = ("dermoscopy", "keras")  # training.augmentation.AUGMENTATIONS
SAMPLINGS = ("uniform", "balanced")  # training.sampling: each image once, or 1/f^power draws
TTA_VIEWS = ("none", "flip", "dihedral")  # training.tta.VIEWS
OPTIMIZERS = ("adam", "adamw")  # training.loop.OPTIMIZERS
