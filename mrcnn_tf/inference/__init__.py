"""Inference beyond `MaskRCNN.detect`: folders of images, result files, SavedModel export, graph inspection."""
