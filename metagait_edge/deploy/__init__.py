"""Deployment: ONNX export, inference backends (PyTorch, ONNX Runtime, TensorRT), TensorRT engines.

Nothing heavy is imported here; import the submodules (``export``, ``backends``, ``engine``,
``tensorrt_backend``) where needed. TensorRT is imported only inside ``engine`` and ``tensorrt_backend``
functions, so everything else works on machines without it.
"""

from __future__ import annotations
