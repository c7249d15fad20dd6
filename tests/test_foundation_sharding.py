import json

from brainspade.sharding import completed, pending, sample_id, sample_seed, shard_indices, write_datalist


def test_shards_partition_indices_and_seeds_do_not_depend_on_shard_count():
    for shards in (1, 3, 4):
        parts = [shard_indices(10, shards, s, first_index=5) for s in range(shards)]
        assert sorted(sum(parts, [])) == list(range(5, 15))
    assert sample_seed(0, 7) == sample_seed(0, 7) and sample_seed(0, 7) != sample_seed(0, 8)
    assert sample_seed(0, 7) != sample_seed(1, 7)


def test_resume_skips_finished_samples_and_ignores_partial_ones(tmp_path):
    files = {"t1": f"{sample_id(0)}_t1.nii.gz", "label": f"{sample_id(0)}_label.nii.gz"}
    (tmp_path / f"{sample_id(0)}.json").write_text(json.dumps({"achieved": {"wmh_ml": 1.0}, "files": files}))
    (tmp_path / f"{sample_id(0)}_label.nii.gz").write_bytes(b"x")
    (tmp_path / f"{sample_id(0)}_t1.nii.gz").write_bytes(b"x")
    (tmp_path / f"{sample_id(1)}.json").write_text("{trunc")  # killed mid-write: not done
    assert completed(tmp_path, range(3)) == {0}
    assert pending(tmp_path, [0, 1, 2]) == [1, 2]
    dl = json.loads(write_datalist(tmp_path).read_text())["training"]
    assert dl == [
        {
            "id": sample_id(0),
            "label": f"{sample_id(0)}_label.nii.gz",
            "t1": f"{sample_id(0)}_t1.nii.gz",
            "wmh_ml": 1.0,
            "synthetic": True,
        }
    ]
