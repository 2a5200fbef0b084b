"""edge-quamba: Quamba int8 quantization of Mamba language models, lowered to ONNX and TensorRT for Jetson."""

__version__ = "0.1.0"
