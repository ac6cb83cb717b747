"""Stage 4: the trained classifier (classifier.py), its heads (heads.py: NumPy), its model folder
(folder.py) and its predictions: what predicts, without the code that trained or judges it.

prediction.py is torch-free, so the ONNX Runtime path can share it without importing PyTorch.
"""
