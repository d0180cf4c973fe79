"""Raw data to training-ready arrays: download or demo, validation, hair removal, the image
cache and the split. No torch here: every stage of this package runs on the CPU."""
