"""One experiment = a balance mode's dataset, a model, a task: the balanced datasets,
classifier training, prediction and saliency."""
