"""Bad-input catalogue, phantom generator CLI (see README 'Bad input' table)."""

import pytest
from cli_harness import assert_clean_failure, files_under, run_cmd


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--pathologies", "glioma"], r"unknown pathology 'glioma'; accepted: healthy, wmh, tumour, both"),
        (["--split", "0.9,0.9,0.1"], r"split must be three fractions summing to 1"),
        (["--num_subjects", "0"], r"num_subjects must be >= 1"),
        (["--contrasts", "pd"], r"unknown contrast 'pd'; accepted: t1, t2, flair"),
    ],
)
def test_phantom_cli_refuses_bad_arguments(tmp_path, args, pattern):
    out = tmp_path / "out"
    res = run_cmd(["-m", "brainspade.phantom", "--output_dir", str(out), "--profile", "tiny", *args])
    assert_clean_failure(res, pattern)
    assert files_under(out) == []


def test_phantom_cli_refuses_to_overwrite_a_dataset(tmp_path):
    out = tmp_path / "out"
    ok = run_cmd(
        [
            "-m",
            "brainspade.phantom",
            "--output_dir",
            str(out),
            "--profile",
            "tiny",
            "--num_subjects",
            "1",
            "--contrasts",
            "t1",
            "--workers",
            "1",
            "--split",
            "1,0,0",
        ]
    )
    assert ok.returncode == 0, ok.stderr
    before = files_under(out)
    res = run_cmd(["-m", "brainspade.phantom", "--output_dir", str(out), "--profile", "tiny", "--num_subjects", "1"])
    assert_clean_failure(res, r"datalist.json already exists", out, before)
