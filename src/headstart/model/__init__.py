"""The trained classifier (classifier.py), its model folder (folder.py) and its predictions.

prediction.py is torch-free, so the ONNX Runtime path can share it without importing PyTorch.
"""
