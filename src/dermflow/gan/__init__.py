"""The generators (one module per ``gan.kind``, listed in gan.registry), their training,
synthesis, selection and the quality check of what they make."""
