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


def train_micro_run(directory: Any, steps: int) -> Any:
    """Write the micro recipe to ``directory/micro.yaml`` and train it through the CLI into
    ``directory/run`` (returned)."""
    import yaml
    from typer.testing import CliRunner

    from zonkey.cli.app import app
    from zonkey.core.recipe import recipe_to_dict

    recipe = directory / "micro.yaml"
    recipe.write_text(yaml.safe_dump(recipe_to_dict(micro_recipe(steps=steps))))
    res = CliRunner().invoke(app, ["train", str(recipe), "--out", str(directory / "run"), "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    return directory / "run"
