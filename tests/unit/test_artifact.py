import json

import pandas as pd
import pytest

from cadasg_dist.errors import ArtifactError
from cadasg_dist.synthesizer import CADASG


def test_save_load_round_trip_gives_the_same_samples(tiny_model, tmp_path):
    out = tiny_model.save(tmp_path / "model")
    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in names and "checksums.json" in names
    assert not any(name.endswith((".pt", ".pkl", ".pickle")) for name in names)
    loaded = CADASG.load(out)
    pd.testing.assert_frame_equal(loaded.sample(100, seed=5), tiny_model.sample(100, seed=5))
    assert loaded.contexts == tiny_model.contexts
    meta = json.loads((out / "meta.json").read_text())
    assert meta["private"] is False and meta["format"] == "cadasg-artifact"


def test_artifact_holds_no_training_rows(tiny_model, mixed_table, tmp_path):
    out = tiny_model.save(tmp_path / "model")
    blob = b"".join(p.read_bytes() for p in out.iterdir())
    for value in mixed_table["score"].head(20):
        assert repr(float(value)).encode() not in blob


def test_tampered_artifact_is_refused(tiny_model, tmp_path):
    out = tiny_model.save(tmp_path / "model")
    cfg = json.loads((out / "config.json").read_text())
    cfg["train"]["epochs"] = 999
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="config.json does not match its checksum"):
        CADASG.load(out)


def test_foreign_or_missing_directory_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        CADASG.load(tmp_path / "nope")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "weights.bin").write_bytes(b"\x00")
    with pytest.raises(ArtifactError, match="not a CA-DASG model directory"):
        CADASG.load(tmp_path / "other")


def test_save_refuses_to_overwrite_a_foreign_directory(tiny_model, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not a CA-DASG model directory"):
        tiny_model.save(tmp_path / "docs")
    assert (tmp_path / "docs" / "keep.txt").read_text() == "mine"
    first = tiny_model.save(tmp_path / "m")
    assert tiny_model.save(first) == first  # an artifact may be replaced
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
