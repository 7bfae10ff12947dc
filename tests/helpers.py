"""Small recipes and models shared by tests (sized to run in seconds on 2 CPU cores)."""

from __future__ import annotations

from typing import Any

from zonkey.core.recipe import validate_recipe


def micro_recipe(**train: Any) -> Any:
    """A one-level recipe small enough to train a few steps in about a second."""
    data = {
        "data": {"source": "wiki", "max_doc_bytes": 96, "batch_bytes": 384, "max_docs": 40},
        "model": {
            "attention": {"name": "sdpa"},
            "levels": [{
                "d_model": 16, "max_segment": 8, "n_compress": 2, "heads": 2, "ffn_mult": 2,
                "splitter": {"name": "learned", "layers": 1, "kernels": [3]},
                "compressor": {"name": "cls", "layers": 1},
                "denoiser": {"name": "ddmm", "decoder_layers": 1, "layers": 1},
            }],
        },
        "train": {"steps": 6, "lr": 0.003, "warmup_steps": 2, "log_every": 2, "seed": 3, "threads": 1, **train},
    }
    return validate_recipe(data, source="<micro>")
