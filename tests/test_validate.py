"""validate_dataset: bad inputs are named, quarantined or fatal; raw data is untouched."""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import write_jpeg, write_png_header
from PIL import Image

from dermflow.cli import main
from dermflow.data.images import read_rgb
from dermflow.data.validate import (
    MAX_PIXELS,
    MIN_SIDE,
    BadInputError,
    check_image,
    image_sources,
    raw_fingerprint,
    validate_dataset,
)
from dermflow.errors import DatasetError


def digest(root):
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.*"))}


def test_clean_dataset_gives_full_manifest(tiny_dataset):
    manifest, quarantine = validate_dataset(tiny_dataset / "HAM10000_metadata.csv",
                                            image_sources(tiny_dataset), "fail")
    assert len(manifest) == 42 and quarantine.empty
    assert {"image_id", "lesion_id", "dx", "label", "path", "width", "height",
            "localization"} <= set(manifest.columns)
    assert (manifest["width"] == 40).all() and (manifest["height"] == 30).all()


def test_fail_names_every_offender(broken_dataset):
    tiny_dataset, expected = broken_dataset
    with pytest.raises(DatasetError) as err:
        validate_dataset(tiny_dataset / "HAM10000_metadata.csv", image_sources(tiny_dataset),
                         "fail")
    for image_id, reason in expected.items():
        assert image_id in str(err.value)
        assert reason in str(err.value)


def test_quarantine_lists_and_leaves_out(broken_dataset):
    tiny_dataset, expected = broken_dataset
    before = digest(tiny_dataset)
    manifest, quarantine = validate_dataset(tiny_dataset / "HAM10000_metadata.csv",
                                            image_sources(tiny_dataset), "quarantine", threads=2)
    reasons = quarantine.groupby("image_id")["reason"].first()
    for image_id, reason in expected.items():
        assert reason in reasons[image_id]
        assert image_id not in set(manifest["image_id"])
    assert len(manifest) == 42 - len(expected)
    assert digest(tiny_dataset) == before, "validation must never modify the raw data"


def test_images_are_read_from_zips(tiny_dataset):
    folder = tiny_dataset / "HAM10000_images_part_1"
    with zipfile.ZipFile(tiny_dataset / "HAM10000_images_part_1.zip", "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f.name)
    shutil.rmtree(folder)
    sources = image_sources(tiny_dataset)
    assert [s.name for s in sources] == ["HAM10000_images_part_1.zip"]
    manifest, _ = validate_dataset(tiny_dataset / "HAM10000_metadata.csv", sources, "fail")
    assert len(manifest) == 42 and manifest["path"].str.contains(".zip::").all()


def test_missing_metadata_column_is_named(tiny_dataset):
    meta = pd.read_csv(tiny_dataset / "HAM10000_metadata.csv").drop(columns="lesion_id")
    meta.to_csv(tiny_dataset / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DatasetError, match="lacks column.*lesion_id"):
        validate_dataset(tiny_dataset / "HAM10000_metadata.csv", image_sources(tiny_dataset))


def validate(root, on_bad_input="quarantine", **kwargs):
    return validate_dataset(root / "HAM10000_metadata.csv", image_sources(root), on_bad_input,
                            **kwargs)


@pytest.mark.parametrize(("size", "limit"), [((14000, 13000), "Pillow's error"),
                                              ((10000, 10000), "Pillow's warning"),
                                              ((9000, 8000), "ours")])
def test_oversized_image_is_a_named_quarantinable_reason(tiny_dataset, size, limit):
    target = tiny_dataset / "HAM10000_images_part_1" / "ISIC_0000009.jpg"
    target.unlink()
    write_png_header(target.with_suffix(".png"), *size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the quarantine row says it all, without Pillow's warning
        manifest, quarantine = validate(tiny_dataset, threads=2)
    row = quarantine.set_index("image_id").loc["ISIC_0000009"]
    assert row["problem"] == "too_large"
    assert f"{size[0] * size[1] / 1e6:.1f} megapixels" in row["reason"]
    assert f"limit of {MAX_PIXELS // 1_000_000} megapixels" in row["reason"]
    assert len(manifest) == 41


def test_a_tiny_image_is_quarantined_not_upscaled_into_the_cache(tiny_dataset):
    target = tiny_dataset / "HAM10000_images_part_1" / "ISIC_0000009.jpg"
    write_jpeg(target, np.random.default_rng(0), size=(8, 6))
    manifest, quarantine = validate(tiny_dataset)
    row = quarantine.set_index("image_id").loc["ISIC_0000009"]
    assert row["problem"] == "too_small"
    assert "8x6" in row["reason"] and f"{MIN_SIDE} px of validation.min_side" in row["reason"]
    assert "ISIC_0000009" not in set(manifest["image_id"]) and len(manifest) == 41
    with pytest.raises(BadInputError, match="1 too_small"):
        validate(tiny_dataset, "fail")
    kept, _ = validate(tiny_dataset, "fail", min_side=6)  # the floor is the config's
    assert "ISIC_0000009" in set(kept["image_id"])


def test_the_size_floor_keeps_ham10000_and_demo_sizes_and_is_the_configs_default(repo, tmp_path):
    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["validation"]["properties"]["min_side"]["default"] == MIN_SIDE
    demo = schema["properties"]["dataset"]["properties"]["demo"]["properties"]
    smallest_demo = (demo["width"]["minimum"], demo["height"]["minimum"])
    for size in ((600, 450), (200, 150), (100, 75), smallest_demo, (MIN_SIDE, MIN_SIDE)):
        write_jpeg(tmp_path / "x.jpg", np.random.default_rng(0), size=size)
        check = check_image(str(tmp_path / "x.jpg"))
        assert check.problem is None and (check.width, check.height) == size, check
    write_jpeg(tmp_path / "x.jpg", np.random.default_rng(0), size=(MIN_SIDE, MIN_SIDE - 1))
    assert check_image(str(tmp_path / "x.jpg")).problem == "too_small"


def test_reasons_are_the_same_on_every_run(broken_dataset):
    root, _ = broken_dataset
    first = validate(root)[1]
    pd.testing.assert_frame_equal(first, validate(root, threads=3)[1])
    assert not first["reason"].str.contains("0x").any()
    assert "cannot identify" not in " ".join(first["reason"])


def test_failure_counts_problems_and_names_the_option(broken_dataset):
    root, _ = broken_dataset
    with pytest.raises(BadInputError) as err:
        validate(root, "fail", hint="rerun with --on-bad-input quarantine")
    message = str(err.value)
    assert "10 bad input(s)" in message and "1 too_large, 2 unreadable" in message
    assert "rerun with --on-bad-input quarantine" in message
    assert len(err.value.quarantine) == 10  # the conflicting image_id's two rows


def test_quarantine_is_a_warning_with_counts_per_problem(broken_dataset, caplog):
    root, _ = broken_dataset
    validate(root)
    warning = [r for r in caplog.records if "quarantined" in r.getMessage()][0]
    assert warning.levelname == "WARNING"
    assert warning.getMessage().startswith("quarantined 10 of 43 metadata rows: 2 colour_mode, "
                                           "2 duplicate, 1 dx, 1 empty_file")


def test_exact_repeats_are_kept_once_and_conflicts_name_their_lines(tiny_dataset, caplog):
    meta = pd.read_csv(tiny_dataset / "HAM10000_metadata.csv")
    pd.concat([meta, meta.iloc[[4, 4]]]).to_csv(tiny_dataset / "HAM10000_metadata.csv",
                                                index=False)
    manifest, quarantine = validate(tiny_dataset, "fail")
    assert len(manifest) == 42 and quarantine.empty
    assert "ISIC_0000004 is listed 3 times, identically (lines 6, 44, 45); kept once" in caplog.text


def test_dx_differing_in_case_or_spaces_is_normalised_and_logged(tiny_dataset, caplog):
    meta = pd.read_csv(tiny_dataset / "HAM10000_metadata.csv")
    meta.loc[meta["dx"] == "mel", "dx"] = ["MEL", "mel  ", "Mel", "mel", "mel", "MEL"]
    meta.to_csv(tiny_dataset / "HAM10000_metadata.csv", index=False)
    manifest, quarantine = validate(tiny_dataset, "fail")
    assert quarantine.empty and (manifest["dx"] == "mel").sum() == 6
    assert "dx normalised (case, spaces) on 4 row(s): 'MEL' -> 'mel' (2)" in caplog.text


@pytest.mark.parametrize("protocol_free", ["absent", "quarantined"])
def test_class_without_usable_image_fails_naming_it(tiny_dataset, protocol_free):
    meta = pd.read_csv(tiny_dataset / "HAM10000_metadata.csv")
    df = meta["dx"] == "df"
    if protocol_free == "absent":
        meta = meta[~df]
        expected = "class df: 0 rows in the metadata"
    else:
        for image_id in meta.loc[df, "image_id"]:
            (tiny_dataset / "HAM10000_images_part_1" / f"{image_id}.jpg").write_text("broken")
        expected = "class df: 6 image(s) in the metadata, all quarantined (6 unreadable)"
    meta.to_csv(tiny_dataset / "HAM10000_metadata.csv", index=False)
    with pytest.raises(BadInputError, match="no usable image of class") as err:
        validate(tiny_dataset)
    assert expected in str(err.value)
    assert len(err.value.quarantine) == (0 if protocol_free == "absent" else 6)
    assert len(validate(tiny_dataset, required_classes=())[0]) == 36


def test_all_rows_rejected_gives_the_reasons(tiny_dataset):
    for image in (tiny_dataset / "HAM10000_images_part_1").iterdir():
        image.write_bytes(b"")
    with pytest.raises(BadInputError, match=r"all 42 row\(s\) quarantined \(42 empty_file\)"
                       ) as err:
        validate(tiny_dataset)
    assert "ISIC_0000000" in str(err.value) and len(err.value.quarantine) == 42


def test_missing_files_can_be_tolerated(tiny_dataset):
    (tiny_dataset / "HAM10000_images_part_1" / "ISIC_0000003.jpg").unlink()
    manifest, quarantine = validate(tiny_dataset, "fail", missing_is_bad=False)
    assert len(manifest) == 41 and quarantine["problem"].tolist() == ["missing_file"]


def test_exif_orientation_is_ignored_and_the_size_used_is_recorded(tiny_dataset):
    path = tiny_dataset / "HAM10000_images_part_1" / "ISIC_0000003.jpg"
    image = Image.fromarray(np.zeros((30, 40, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(path, exif=exif.tobytes())
    manifest, _ = validate(tiny_dataset, "fail")
    row = manifest.set_index("image_id").loc["ISIC_0000003"]
    assert (row["width"], row["height"]) == (40, 30)
    assert read_rgb(row["path"]).shape == (row["height"], row["width"], 3)


def test_images_beside_the_metadata_are_found(tiny_dataset):
    folder = tiny_dataset / "HAM10000_images_part_1"
    for image in folder.iterdir():
        image.rename(tiny_dataset / image.name)
    folder.rmdir()
    (tiny_dataset / "ISIC2018_Task3_Test_Images").mkdir()  # the external set is not HAM10000
    shutil.copy(tiny_dataset / "ISIC_0000000.jpg", tiny_dataset / "ISIC2018_Task3_Test_Images")
    assert image_sources(tiny_dataset) == [tiny_dataset]
    assert len(validate(tiny_dataset, "fail")[0]) == 42


def test_cli_validate_names_its_option_and_writes_the_quarantine(broken_dataset, tmp_path,
                                                                  capsys):
    root, expected = broken_dataset
    assert main(["validate", str(root), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "rerun with --on-bad-input quarantine" in err and "on_bad_input:" not in err
    assert f"every row set aside, with its reason: {tmp_path / 'out' / 'quarantine.csv'}" in err
    assert "Traceback" not in err
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    assert set(quarantine["image_id"]) == set(expected)
    assert not (tmp_path / "out" / "manifest.csv").exists()
    assert main(["validate", str(root), str(tmp_path / "out"), "--on-bad-input",
                 "quarantine"]) == 0
    assert len(pd.read_csv(tmp_path / "out" / "manifest.csv")) == 33


def test_fingerprint_follows_files_in_folders_and_zips(tiny_dataset):
    folder = tiny_dataset / "HAM10000_images_part_1"
    archive = tiny_dataset / "extra.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ISIC_9999999.jpg", b"x")
    sources = [folder, archive]
    before = raw_fingerprint(sources)
    (folder / ".DS_Store").write_bytes(b"finder")  # hidden files are not read, nor counted
    assert raw_fingerprint(sources) == before == raw_fingerprint(sources[::-1])
    with open(folder / "ISIC_0000003.jpg", "r+b") as fh:  # in place, same size
        fh.write(b"\0")
    os.utime(folder / "ISIC_0000003.jpg", ns=(0, 10**18))
    changed = raw_fingerprint(sources)
    assert changed != before
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("ISIC_9999998.jpg", b"y")
    assert raw_fingerprint(sources) != changed
