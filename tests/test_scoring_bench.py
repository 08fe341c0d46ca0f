"""``bench_extract`` runs and reports its parts (on the tiny model; the real numbers come from the full model)."""

from svlib.model import SpeakerModel
from svlib.bench.extract import bench_extract


def test_bench_extract_reports_parts():
    result = bench_extract(seconds=(0.5,), repeats=1, model=SpeakerModel.build("tiny").eval())
    (row,) = result["lengths"]
    assert row["frames"] == 24 and row["bare_s_per_audio_s"] > 0
    assert set(row["parts_percent_of_bare"]) == {"features", "encoder_mask_and_states", "stack", "head"}
    assert result["model"].startswith("given model: 4 layers x 64")
