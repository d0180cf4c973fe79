"""Every classifier an experiment can name: the registry (torch-free), the timm backbones,
one module per model family, freezing, and model files on disk."""
