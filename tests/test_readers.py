"""Dataset readers on tiny copies of each official layout, written into tmp_path by the tests."""
from __future__ import annotations

import gzip
import re
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from modeling_place.data.labels_place import CHEXPERT_COMPETITION_TASKS, CHEXPERT_LABELS, canonical_label
from modeling_place.data.prepare import main as prepare_main
from modeling_place.data.readers_place import (
    DatasetFormatError,
    decode_siim_mask,
    load_dataset_by_name,
    load_image,
    parse_object_cxr_annotation,
    require_columns,
    rle_decode,
    rle_encode,
    with_lazy_images,
)

# ----------------------------------------------------------------------------------------------- helpers


def write_image(path: Path, value: int = 128, size: tuple[int, int] = (8, 8)) -> Path:
    """A tiny grayscale PNG/JPG (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)
    return path


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2") -> Path:
    """A minimal valid 8-bit DICOM file made with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dicom = Dataset()
    dicom.file_meta = meta
    dicom.SOPClassUID, dicom.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dicom.Rows, dicom.Columns = pixels.shape
    dicom.SamplesPerPixel, dicom.PhotometricInterpretation = 1, photometric
    dicom.BitsAllocated, dicom.BitsStored, dicom.HighBit, dicom.PixelRepresentation = 8, 8, 7, 0
    dicom.PixelData = pixels.astype(np.uint8).tobytes()
    dicom.save_as(path, enforce_file_format=True)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def csv_text(header: list[str], rows: list[list]) -> str:
    """CSV with blanks for None (labels 'not mentioned')."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    return "\n".join(",".join(line) for line in [header, *cells]) + "\n"


# ----------------------------------------------------------------------------------------------- labels


def test_canonical_label_maps_dataset_names():
    assert canonical_label("Effusion", "nih") == "Pleural Effusion"
    assert canonical_label("Mass", "nih") == canonical_label("Nodule", "nih") == "Lung Lesion"
    assert canonical_label("Pleural_Thickening", "nih") == "Pleural Other"
    assert canonical_label("Infiltration", "nih") == "Lung Opacity"
    assert canonical_label("Target", "rsna") == "Pneumonia"
    assert canonical_label("pleural_effusion", "synthetic") == "Pleural Effusion"
    assert canonical_label("Pleural Effusion", "mimic") == "Pleural Effusion"
    with pytest.raises(ValueError, match="Unknown label 'Effusion' for source 'chexpert'"):
        canonical_label("Effusion", "chexpert")
    with pytest.raises(ValueError, match="valid sources"):
        canonical_label("Mass", "kaggle")


# ----------------------------------------------------------------------------------------------- MIMIC

MIMIC_META_HEADER = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
# dicom, subject, study, view, official split
MIMIC_IMAGES = [
    ("d1", "10000032", "50414267", "PA", "train"),
    ("d2", "10000032", "50414267", "LATERAL", "train"),
    ("d3", "10000032", "53189527", "AP", "test"),
    ("d4", "11000011", "51000001", "", "validate"),
    ("d5", "11000011", "51000001", "PA", "validate"),
    ("d6", "11000011", "51000099", "AP", "train"),  # its study has no report -> dropped
]
MIMIC_REPORTS = {
    ("10000032", "50414267"): "FINAL REPORT\n INDICATION: cough\n FINDINGS: Lungs are clear.\n IMPRESSION: No acute process.",
    ("10000032", "53189527"): "FINDINGS: Small left effusion.\n\nIMPRESSION: Effusion.",
    ("11000011", "51000001"): "IMPRESSION: Cardiomegaly.",
}


def write_mimic(root: Path, reports: str = "zip") -> Path:
    """MIMIC-CXR-JPG layout: JPG tree, metadata (.csv.gz), split (.csv), chexpert (.csv.gz), reports."""
    meta_rows = [[d, s, st, "CHEST", v, 8, 8, "21800506", "213014", "CHEST", "", ""] for d, s, st, v, _ in MIMIC_IMAGES]
    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as handle:
        handle.write(csv_text(MIMIC_META_HEADER, meta_rows))
    split_rows = [[d, st, s, split] for d, s, st, _, split in MIMIC_IMAGES]
    write_text(root / "mimic-cxr-2.0.0-split.csv", csv_text(["dicom_id", "study_id", "subject_id", "split"], split_rows))
    label_rows = []
    for subject, study, atelectasis, cardiomegaly in [
        ("10000032", "50414267", -1.0, 1.0),
        ("10000032", "53189527", 0.0, None),
        ("11000011", "51000001", None, -1.0),
    ]:
        values = {"Atelectasis": atelectasis, "Cardiomegaly": cardiomegaly}
        label_rows.append([subject, study, *[values.get(label) for label in MIMIC_LABEL_ORDER]])
    with gzip.open(root / "mimic-cxr-2.0.0-chexpert.csv.gz", "wt") as handle:
        handle.write(csv_text(["subject_id", "study_id", *MIMIC_LABEL_ORDER], label_rows))
    for dicom, subject, study, _, _ in MIMIC_IMAGES:
        write_image(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg")
    if reports == "zip":
        with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w") as archive:
            for (subject, study), text in MIMIC_REPORTS.items():
                archive.writestr(f"files/p{subject[:2]}/p{subject}/s{study}.txt", text)
    else:
        for (subject, study), text in MIMIC_REPORTS.items():
            write_text(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt", text)
    return root


# The MIMIC-CXR-JPG chexpert CSV orders labels alphabetically (DATA_FORMATS.md section 1).
MIMIC_LABEL_ORDER = sorted(CHEXPERT_LABELS)


@pytest.mark.parametrize("reports", ["zip", "tree"])
def test_mimic_cxr_frontal_split_reports_and_labels(tmp_path, reports):
    root = write_mimic(tmp_path, reports)
    data = load_dataset_by_name("mimic-cxr", root, uncertainty="ones")
    assert {split: data[split]["image_id"] for split in data} == {
        "train": ["d1"], "validation": ["d5"], "test": ["d3"],
    }
    train = data["train"][0]
    assert train["findings"] == "Lungs are clear." and train["impression"] == "No acute process."
    assert train["text"] == "Lungs are clear.\n\nNo acute process."
    assert train["study_id"] == "50414267" and train["view"] == "PA"
    assert train["image_path"] == str(root / "files/p10/p10000032/s50414267/d1.jpg")
    assert (train["Atelectasis"], train["Cardiomegaly"], train["Edema"]) == (1.0, 1.0, 0.0)
    assert data["validation"][0]["Cardiomegaly"] == 1.0  # U-Ones
    zeros = load_dataset_by_name("mimic-cxr", root, uncertainty="zeros")
    assert zeros["train"][0]["Atelectasis"] == 0.0 and zeros["validation"][0]["Cardiomegaly"] == 0.0


def test_mimic_cxr_keeps_unreported_studies_and_all_views_when_asked(tmp_path):
    root = write_mimic(tmp_path)
    data = load_dataset_by_name("mimic-cxr", root, views=None, drop_empty=False, uncertainty="keep")
    assert sorted(data["train"]["image_id"]) == ["d1", "d2", "d6"]
    assert data["train"].filter(lambda r: r["image_id"] == "d6")[0]["text"] == ""
    assert data["train"].filter(lambda r: r["image_id"] == "d1")[0]["Atelectasis"] == -1.0


def test_mimic_cxr_errors_name_missing_file_column_and_image(tmp_path):
    root = write_mimic(tmp_path)
    (root / "mimic-cxr-2.0.0-chexpert.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match=str(root / "mimic-cxr-2.0.0-chexpert.csv.gz")):
        load_dataset_by_name("mimic-cxr", root)
    root = write_mimic(tmp_path)
    write_text(root / "mimic-cxr-2.0.0-split.csv", "dicom_id,study_id,subject_id,fold\nd1,50414267,10000032,train\n")
    with pytest.raises(ValueError, match=r"mimic-cxr-2\.0\.0-split\.csv: missing column\(s\) 'split'"):
        load_dataset_by_name("mimic-cxr", root)
    root = write_mimic(tmp_path)
    (root / "files/p10/p10000032/s53189527/d3.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="d3.jpg"):
        load_dataset_by_name("mimic-cxr", root)
    assert "test" not in load_dataset_by_name("mimic-cxr", root, missing_images="drop")
    (root / "mimic-cxr-reports.zip").unlink()
    with pytest.raises(FileNotFoundError, match="mimic-cxr-reports.zip"):
        load_dataset_by_name("mimic-cxr", root)


def test_mgca_master_strips_version_prefix_and_merges_splits(tmp_path):
    root = write_mimic(tmp_path)
    header = ["Path", "dicom_id", "subject_id", "study_id", "ViewPosition", "impression", "findings", "split"]
    rows = [
        ["2.0.0/files/p10/p10000032/s50414267/d1.jpg", "d1", "10000032", "s50414267", "PA", "No acute process.", "Lungs are clear.", "train"],
        ["2.0.0/files/p11/p11000011/s51000001/d5.jpg", "d5", "11000011", "s51000001", "PA", "Cardiomegaly.", " ", "valid"],
        ["2.0.0/files/p10/p10000032/s53189527/d3.jpg", "d3", "10000032", "s53189527", "AP", " ", " ", "valid"],
    ]
    write_text(root / "master.csv", csv_text(header, rows))
    label_header = ["Path", "ViewPosition", "split", *CHEXPERT_LABELS]
    write_text(root / "train.csv", csv_text(label_header, [[rows[0][0], "PA", "train", *([1.0] + [None] * 13)]]))
    write_text(root / "test.csv", csv_text(label_header, [[rows[1][0], "PA", "valid", *([-1.0] * 14)]]))
    data = load_dataset_by_name("mgca-master", root, with_labels=True, uncertainty="ones")
    assert data["train"]["image_path"] == [str(root / "files/p10/p10000032/s50414267/d1.jpg")]
    assert data["train"][0]["text"] == "No acute process.\n\nLungs are clear."  # MGCA order: impression first
    assert data["train"][0]["study_id"] == "50414267" and data["train"][0]["No Finding"] == 1.0
    assert data["validation"]["image_id"] == ["d5"]  # d3 has both sections empty -> dropped
    assert data["validation"][0]["Edema"] == 1.0


# ----------------------------------------------------------------------------------------------- CheXpert

CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]


def chexpert_row(prefix: str, patient: int, positives: dict[str, float], lateral: bool = False) -> list:
    view = "view2_lateral.jpg" if lateral else "view1_frontal.jpg"
    path = f"{prefix}/train/patient{patient:05d}/study1/{view}"
    labels = [positives.get(label) for label in CHEXPERT_LABELS]
    return [path, "Female", 60, "Lateral" if lateral else "Frontal", "" if lateral else "AP", *labels]


def write_chexpert(root: Path, csv_prefix: str = "CheXpert-v1.0-small", folder: str | None = None) -> Path:
    """CheXpert layout: ROOT/<folder>/{train,valid}.csv with Path prefixed by ``csv_prefix``."""
    folder_path = root / (folder or csv_prefix)
    rows, patient = [], 0
    for task in CHEXPERT_COMPETITION_TASKS:  # 3 clean single-positive frontal images per task
        for _ in range(3):
            patient += 1
            rows.append(chexpert_row(csv_prefix, patient, {task: 1.0, "No Finding": 0.0}))
    extra = [
        ({"Atelectasis": 1.0, "Edema": -1.0}, False),  # uncertain elsewhere -> not in 5x200
        ({"Atelectasis": 1.0, "Cardiomegaly": 1.0}, False),  # two positives -> not in 5x200
        ({"Edema": 1.0}, True),  # lateral
        ({"Atelectasis": -1.0, "Cardiomegaly": -1.0, "Edema": -1.0}, False),  # uncertainty-policy probe
    ]
    for positives, lateral in extra:
        patient += 1
        rows.append(chexpert_row(csv_prefix, patient, positives, lateral))
    write_text(folder_path / "train.csv", csv_text(CHEXPERT_HEADER, rows))
    valid = [chexpert_row(csv_prefix, 90000 + i, {"Edema": 1.0}) for i in range(2)]
    valid = [[row[0].replace("/train/", "/valid/"), *row[1:]] for row in valid]
    write_text(folder_path / "valid.csv", csv_text(CHEXPERT_HEADER, valid))
    for row in rows + valid:
        relative = Path(row[0]).relative_to(csv_prefix)
        write_image(folder_path / relative.with_suffix(".jpg"))
    return root


@pytest.mark.parametrize(
    "csv_prefix, folder",
    [("CheXpert-v1.0-small", None), ("CheXpert-v1.0", None), ("CheXpert-v1.0-small", "CheXpert-v1.0")],
)
def test_chexpert_path_prefixes_and_holdout(tmp_path, csv_prefix, folder):
    root = write_chexpert(tmp_path, csv_prefix, folder)
    data = load_dataset_by_name("chexpert", root, holdout_size=3)
    assert {s: data[s].num_rows for s in data} == {"train": 15 + 3 - 3, "validation": 3, "test": 2}
    for row in (data["train"][0], data["test"][0]):
        assert Path(row["image_path"]).is_file()
    assert data["train"][0]["image_id"].startswith("train/patient")
    assert data["train"][0]["patient_id"].startswith("patient") and data["train"][0]["view"] == "AP"


def test_chexpert_uncertainty_policies(tmp_path):
    root = write_chexpert(tmp_path)

    def probe(policy):
        data = load_dataset_by_name("chexpert", root, uncertainty=policy, split_scheme="official")
        row = data["train"].filter(lambda r: r["patient_id"] == "patient00019")[0]
        return row["Atelectasis"], row["Cardiomegaly"], row["Edema"], row["Fracture"]

    assert probe("ones") == (1.0, 1.0, 1.0, 0.0)
    assert probe("zeros") == (0.0, 0.0, 0.0, 0.0)
    assert probe("mgca") == (1.0, 0.0, 1.0, 0.0)  # U-Ones Atelectasis/Edema, U-Zeros Cardiomegaly
    assert probe("keep") == (-1.0, -1.0, -1.0, 0.0)


def test_chexpert_5x200_matches_mgca_recipe(tmp_path):
    root = write_chexpert(tmp_path)
    data = load_dataset_by_name("chexpert-5x200", root, per_class=2)["test"]
    assert data.num_rows == 10 and data.features["label"].names == list(CHEXPERT_COMPETITION_TASKS)
    # Oracle: MGCA's preprocess_chexpert_5x200_data on the raw CSV, with n=2.
    raw = pd.read_csv(root / "CheXpert-v1.0-small/train.csv").fillna(0)
    raw = raw[raw["Frontal/Lateral"] == "Frontal"]
    others = [label for label in CHEXPERT_LABELS if label != "No Finding"]
    expected = []
    for task in CHEXPERT_COMPETITION_TASKS:
        mask = (raw[task] == 1) & (raw[[o for o in others if o != task]] == 0).all(axis=1)
        expected += [p.removeprefix("CheXpert-v1.0-small/") for p in raw[mask].sample(n=2, random_state=0)["Path"]]
    assert data["image_id"] == expected
    for row in data:
        assert row[CHEXPERT_COMPETITION_TASKS[row["label"]]] == 1.0
        assert sum(row[label] for label in others) == 1.0


def test_chexpert_missing_csv_and_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "CheXpert-v1.0-small" / "train.csv")):
        load_dataset_by_name("chexpert", tmp_path)
    root = write_chexpert(tmp_path)
    first = root / "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    first.unlink()
    with pytest.raises(FileNotFoundError, match="patient00001/study1/view1_frontal.jpg"):
        load_dataset_by_name("chexpert", root)


# ----------------------------------------------------------------------------------------------- RSNA

RSNA_LABELS = [
    ["p1", 100, 200, 50, 60, 1],
    ["p1", 300, 310, 20, 30, 1],
    ["p2", None, None, None, None, 0],
    ["p3", 10, 20, 30, 40, 1],
    ["p0", None, None, None, None, 0],
]


@pytest.mark.parametrize("image_format", ["dcm", "png"])
def test_rsna_boxes_aggregated_per_patient(tmp_path, image_format):
    write_text(tmp_path / "stage_2_train_labels.csv", csv_text(["patientId", "x", "y", "width", "height", "Target"], RSNA_LABELS))
    classes = [["p1", "Lung Opacity"], ["p1", "Lung Opacity"], ["p2", "Normal"], ["p3", "Lung Opacity"], ["p0", "No Lung Opacity / Not Normal"]]
    write_text(tmp_path / "stage_2_detailed_class_info.csv", csv_text(["patientId", "class"], classes))
    for pid in ("p0", "p1", "p2", "p3"):
        if image_format == "dcm":
            write_dicom(tmp_path / "stage_2_train_images" / f"{pid}.dcm", np.full((8, 8), 7))
        else:
            write_image(tmp_path / "stage_2_train_images_png" / f"{pid}.png")
    data = load_dataset_by_name("rsna", tmp_path)
    assert {s: data[s].num_rows for s in data} == {"train": 2, "validation": 1, "test": 1}
    rows = {row["patient_id"]: row for split in data.values() for row in split}
    assert rows["p1"]["boxes"] == [[100, 200, 150, 260], [300, 310, 320, 340]]
    assert rows["p2"]["boxes"] == [] and rows["p2"]["Pneumonia"] == 0.0 and rows["p2"]["class"] == "Normal"
    assert rows["p3"]["boxes"] == [[10, 20, 40, 60]] and rows["p3"]["Pneumonia"] == 1.0
    assert rows["p1"]["image_path"].endswith(f"p1.{image_format}") and Path(rows["p1"]["image_path"]).is_file()


def test_rsna_wrong_column_is_named(tmp_path):
    write_text(tmp_path / "stage_2_train_labels.csv", "patientId,x,y,w,h,Target\np1,1,2,3,4,1\n")
    with pytest.raises(ValueError, match=r"stage_2_train_labels\.csv: missing column\(s\) 'width', 'height'"):
        load_dataset_by_name("rsna", tmp_path)


# ----------------------------------------------------------------------------------------------- SIIM

# Hand-made 4x3 mask. Column-major pixel order: column 0 is pixels 0-3, column 1 is 4-7, column 2 is 8-11.
HAND_MASK = np.array([[0, 1, 0], [0, 1, 0], [1, 0, 0], [1, 0, 1]], dtype=np.uint8)
HAND_RLE = "2 4 5 1"  # runs at pixels 2-5 and 11; relative: the second start counts from the end (6) of the first


def test_rle_decode_pixel_exact_against_hand_mask():
    decoded = rle_decode(HAND_RLE, 4, 3)
    assert decoded.shape == (4, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, HAND_MASK)
    assert rle_decode("-1", 4, 3).sum() == 0 and rle_decode(" -1", 4, 3).sum() == 0
    union = decode_siim_mask([HAND_RLE, "0 1"], 4, 3)
    expected = HAND_MASK.copy()
    expected[0, 0] = 1
    np.testing.assert_array_equal(union, expected)
    assert rle_encode(HAND_MASK) == HAND_RLE
    with pytest.raises(ValueError, match="past the 12 pixels"):
        rle_decode("10 5", 4, 3)
    with pytest.raises(ValueError, match="odd number"):
        rle_decode("1 2 3", 4, 3)


def kaggle_rle2mask(rle: str, width: int, height: int) -> np.ndarray:
    """The Kaggle/MGCA reference decoder (loop), used as an oracle."""
    mask = np.zeros(width * height)
    array = np.asarray([int(x) for x in rle.split()])
    position = 0
    for start, length in zip(array[0::2], array[1::2]):
        position += start
        mask[position:position + length] = 1
        position += length
    return mask.reshape(width, height).T


def test_rle_round_trip_and_kaggle_reference_on_random_masks():
    rng = np.random.default_rng(0)
    for height, width in [(7, 5), (16, 16), (3, 11)]:
        mask = (rng.random((height, width)) > 0.6).astype(np.uint8)
        rle = rle_encode(mask)
        np.testing.assert_array_equal(rle_decode(rle, height, width), mask)
        np.testing.assert_array_equal(kaggle_rle2mask(rle, width, height), mask)


SIIM_IDS = [f"1.2.276.0.7230010.3.1.4.8323329.{n}.1517875188.959090" for n in (5597, 5598, 5599, 5600)]


def test_siim_stage1_leading_space_header_union_and_nested_dicoms(tmp_path):
    lines = ["ImageId, EncodedPixels", f"{SIIM_IDS[0]}, {HAND_RLE}", f"{SIIM_IDS[0]}, 0 1", f"{SIIM_IDS[1]}, -1",
             f"{SIIM_IDS[2]}, 3 2", f"{SIIM_IDS[3]}, -1"]
    write_text(tmp_path / "train-rle.csv", "\n".join(lines) + "\n")
    for n, image_id in enumerate(SIIM_IDS):
        folder = tmp_path / "dicom-images-train" / f"1.2.276.0.7230010.3.1.2.{n}" / f"1.2.276.0.7230010.3.1.3.{n}"
        write_dicom(folder / f"{image_id}.dcm", np.full((4, 3), n))
    data = load_dataset_by_name("siim", tmp_path)
    assert sum(data[s].num_rows for s in data) == 4 and set(data) == {"train", "validation", "test"}
    rows = {row["image_id"]: row for split in data.values() for row in split}
    assert rows[SIIM_IDS[0]]["mask_rle"] == [HAND_RLE, "0 1"] and rows[SIIM_IDS[0]]["Pneumothorax"] == 1.0
    assert rows[SIIM_IDS[1]]["mask_rle"] == [] and rows[SIIM_IDS[1]]["Pneumothorax"] == 0.0
    union = decode_siim_mask(rows[SIIM_IDS[0]]["mask_rle"], 4, 3)
    assert union[0, 0] == 1 and (union[1:] == HAND_MASK[1:]).all()
    assert np.asarray(load_image(rows[SIIM_IDS[3]]["image_path"])).shape == (4, 3)


def test_siim_stage2_naming_and_balanced_negatives(tmp_path):
    ids = [f"ID_{n:04x}" for n in range(8)]
    encoded = ["3 2", "-1", "-1", "1 1", "-1", "-1", "-1", "2 2"]
    write_text(tmp_path / "stage_2_train.csv", csv_text(["ImageId", "EncodedPixels"], list(zip(ids, encoded))))
    for image_id in ids:
        write_dicom(tmp_path / "stage_2_images" / f"{image_id}.dcm", np.zeros((4, 3)))
    data = load_dataset_by_name("siim", tmp_path, split_scheme="none", balance_train_negatives=True)
    labels = data["train"]["Pneumothorax"]
    assert labels.count(1.0) == 3 and labels.count(0.0) == 3


# ----------------------------------------------------------------------------------------------- COVIDx


def test_covidx_txt_splits_and_classes(tmp_path):
    train = ["1 a.png COVID-19 cohen", "2 b.png normal rsna", "3 c.png pneumonia rsna", "4 d.png normal rsna",
             "5 e.png COVID-19 bimcv"]
    write_text(tmp_path / "train_COVIDx9B.txt", "\n".join(train) + "\n")
    write_text(tmp_path / "test_COVIDx9B.txt", "9 t.png pneumonia rsna\n")
    for line in train:
        write_image(tmp_path / "train" / line.split()[1])
    write_image(tmp_path / "test" / "t.png")
    data = load_dataset_by_name("covidx", tmp_path)
    assert {s: data[s].num_rows for s in data} == {"train": 4, "validation": 1, "test": 1}
    assert data["train"].features["label"].names == ["normal", "pneumonia", "COVID-19"]
    rows = {row["image_id"]: row for split in data.values() for row in split}
    assert rows["a.png"]["label"] == 2 and rows["a.png"]["COVID-19"] == 1.0 and rows["t.png"]["label"] == 1
    write_text(tmp_path / "test_COVIDx9B.txt", "9 t.png\n")
    with pytest.raises(DatasetFormatError, match=r"test_COVIDx9B\.txt: row 1, column 'label_name': a blank cell"):
        load_dataset_by_name("covidx", tmp_path)


# ----------------------------------------------------------------------------------------------- Object-CXR


def test_object_cxr_shape_codes_to_boxes(tmp_path):
    train = [
        ["00001.jpg", "0 10 20 30 40;2 5 5 15 5 10 25"],
        ["00002.jpg", ""],
        ["00003.jpg", "1 50 60 70 90"],
    ]
    write_text(tmp_path / "train.csv", csv_text(["image_name", "annotation"], train))
    write_text(tmp_path / "dev.csv", csv_text(["image_path", "annotation"], [["08001.jpg", "0 1 2 3 4"]]))
    for name, _ in train:
        write_image(tmp_path / "train" / name)
    write_image(tmp_path / "dev" / "08001.jpg")
    data = load_dataset_by_name("object-cxr", tmp_path)
    assert {s: data[s].num_rows for s in data} == {"train": 2, "validation": 1, "test": 1}
    rows = {row["image_id"]: row for split in data.values() for row in split}
    assert rows["00001.jpg"]["boxes"] == [[10, 20, 30, 40], [5, 5, 15, 25]]
    assert rows["00001.jpg"]["box_types"] == ["rectangle", "polygon"]
    assert rows["00003.jpg"]["boxes"] == [[50, 60, 70, 90]] and rows["00003.jpg"]["box_types"] == ["ellipse"]
    assert rows["00002.jpg"]["boxes"] == [] and rows["00002.jpg"]["Foreign Object"] == 0.0
    assert rows["08001.jpg"]["split"] == "test"
    assert parse_object_cxr_annotation(float("nan")) == ([], [])
    write_text(tmp_path / "dev.csv", csv_text(["image_name", "annotation"], [["08001.jpg", "3 1 2 3 4"]]))
    with pytest.raises(DatasetFormatError, match=r"dev\.csv: row 1, column .annotation.: unknown Object-CXR shape code .3."):
        load_dataset_by_name("object-cxr", tmp_path)


# ----------------------------------------------------------------------------------------------- IU X-Ray


def test_iu_xray_r2gen_annotation(tmp_path):
    def item(study, split):
        return {"id": study, "report": f"The heart is normal {study}.", "image_path": [f"{study}/0.png", f"{study}/1.png"], "split": split}

    annotation = {"train": [item("CXR1_IM-0001", "train"), item("CXR2_IM-0002", "train")], "val": [item("CXR3_IM-0003", "val")],
                  "test": [item("CXR4_IM-0004", "test")]}
    write_text(tmp_path / "annotation.json", json.dumps(annotation))
    for items in annotation.values():
        for entry in items:
            for relative in entry["image_path"]:
                write_image(tmp_path / "images" / relative)
    data = load_dataset_by_name("iu-xray", tmp_path)
    assert {s: data[s].num_rows for s in data} == {"train": 4, "validation": 2, "test": 2}
    first = data["train"][0]
    assert first["study_id"] == "CXR1_IM-0001" and first["image_id"] == "CXR1_IM-0001/0.png"
    assert first["text"] == "The heart is normal CXR1_IM-0001."
    broken = {"train": [{"id": "x", "report": "r"}]}
    write_text(tmp_path / "annotation.json", json.dumps(broken))
    with pytest.raises(DatasetFormatError, match=r"annotation\.json \['train'\]: row 1, column 'image_path': the key is missing"):
        load_dataset_by_name("iu-xray", tmp_path)


OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR{n}"/><MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="INDICATION">Cough {n}</AbstractText>
<AbstractText Label="FINDINGS">Heart size normal {n}.</AbstractText>
<AbstractText Label="IMPRESSION">No acute disease {n}.</AbstractText>
</Abstract></Article></MedlineCitation>{images}</eCitation>
"""


def test_iu_xray_openi_xml_and_png(tmp_path):
    for n in range(1, 6):
        image_ids = [] if n == 5 else [f"CXR{n}_1_IM-000{n}-1001", f"CXR{n}_1_IM-000{n}-2001"]
        images = "".join(f'<parentImage id="{i}"><figureId>F1</figureId></parentImage>' for i in image_ids)
        write_text(tmp_path / "ecgen-radiology" / f"{n}.xml", OPENI_XML.format(n=n, images=images))
        for image_id in image_ids:
            write_image(tmp_path / "NLMCXR_png" / f"{image_id}.png")
    data = load_dataset_by_name("iu-xray", tmp_path)
    assert sum(data[s].num_rows for s in data) == 8  # study 5 has no image
    row = next(r for split in data.values() for r in split if r["study_id"] == "CXR2")
    assert row["findings"] == "Heart size normal 2." and row["impression"] == "No acute disease 2."
    assert row["text"] == "Heart size normal 2.\n\nNo acute disease 2."
    assert row["image_path"].endswith("NLMCXR_png/" + row["image_id"] + ".png")
    study_splits = {r["study_id"]: r["split"] for split in data.values() for r in split}
    assert len(study_splits) == 4 and sorted(set(study_splits.values())) == ["test", "train", "validation"]


# ----------------------------------------------------------------------------------------------- NIH

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
NIH_ROWS = [
    "00000001_000.png,Cardiomegaly|Effusion,0,1,58,M,PA,2682,2749,0.143,0.143",
    "00000001_001.png,Mass,1,1,58,M,PA,2894,2729,0.143,0.143",
    "00000002_000.png,No Finding,0,2,81,M,AP,2500,2048,0.171,0.171",
    "00000003_000.png,Nodule|Infiltration,0,3,74,F,PA,2500,2048,0.168,0.168",
]


def write_nih(root: Path) -> Path:
    write_text(root / "Data_Entry_2017_v2020.csv", "\n".join([NIH_HEADER, *NIH_ROWS]) + "\n")
    write_text(root / "train_val_list.txt", "00000001_000.png\n00000001_001.png\n00000002_000.png\n")
    write_text(root / "test_list.txt", "00000003_000.png\n")
    write_text(root / "BBox_List_2017.csv", "Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000003_000.png,Nodule,10,20,5,6,,,\n")
    for row in NIH_ROWS:
        write_image(root / "images_001" / "images" / row.split(",")[0])
    return root


def test_nih_labels_splits_and_boxes(tmp_path):
    root = write_nih(tmp_path)
    data = load_dataset_by_name("nih", root)
    assert data["train"]["image_id"] == ["00000001_000.png", "00000001_001.png", "00000002_000.png"]
    first, mass = data["train"][0], data["train"][1]
    assert first["Pleural Effusion"] == 1.0 and first["Cardiomegaly"] == 1.0 and first["Lung Lesion"] == 0.0
    assert mass["Lung Lesion"] == 1.0 and "Mass" not in data["train"].column_names
    test = data["test"][0]
    assert test["Lung Lesion"] == 1.0 and test["Lung Opacity"] == 1.0
    assert test["boxes"] == [[10, 20, 15, 26]] and test["box_labels"] == ["Lung Lesion"] and first["boxes"] == []
    native = load_dataset_by_name("nih", root, label_space="native")
    assert native["test"][0]["Nodule"] == 1.0 and native["test"][0]["Mass"] == 0.0


# ----------------------------------------------------------------------------------------------- generic


def test_generic_csv_tsv_jsonl_and_separator_error(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        write_image(tmp_path / "img" / name)
    write_text(tmp_path / "pairs.csv", "image_path,findings,impression,split,pleural_effusion\n"
               "img/a.png,Small effusion.,Effusion.,train,1\nimg/b.png,,Normal.,val,0\n")
    data = load_dataset_by_name("csv", tmp_path / "pairs.csv")
    assert data["train"][0]["text"] == "Small effusion.\n\nEffusion." and data["train"][0]["Pleural Effusion"] == 1.0
    assert data["validation"][0]["text"] == "Normal." and data["validation"][0]["image_path"] == str(tmp_path / "img/b.png")
    write_text(tmp_path / "pairs.tsv", "image_path\ttext\nimg/a.png\tA, with comma.\n")
    assert load_dataset_by_name("csv", tmp_path / "pairs.tsv")["train"][0]["text"] == "A, with comma."
    lines = [{"image_path": ["img/a.png", "img/c.png"], "text": "Two views.", "study_id": "s1", "split": "test"}]
    write_text(tmp_path / "pairs.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n")
    test = load_dataset_by_name("csv", tmp_path / "pairs.jsonl")["test"]
    assert test["image_id"] == ["img/a.png", "img/c.png"] and test["study_id"] == ["s1", "s1"]
    write_text(tmp_path / "pairs.txt", "image_path;text\nimg/a.png;x\n")
    with pytest.raises(ValueError, match=r"pairs\.txt: no column 'image_path' in the header read with a comma or a tab"):
        load_dataset_by_name("csv", tmp_path / "pairs.txt")
    write_text(tmp_path / "notext.csv", "image_path,caption\nimg/a.png,x\n")
    with pytest.raises(ValueError, match=r"notext\.csv: missing a text column"):
        load_dataset_by_name("csv", tmp_path / "notext.csv")


def test_require_columns_names_file_and_column():
    with pytest.raises(ValueError, match=r"t\.csv: missing column\(s\) 'b'"):
        require_columns(pd.DataFrame({"a": [1]}), ["a", "b"], "t.csv")
    with pytest.raises(ValueError, match=r"rows\.json: missing column\(s\) 'text'"):
        require_columns([{"image_path": "x", "text": "y"}, {"image_path": "z"}], ["image_path", "text"], "rows.json")
    require_columns(["a", "b"], ["a"], "header.csv")


# ----------------------------------------------------------------------------------------------- registry & images


def test_registry_rejects_unknown_names_and_options(tmp_path):
    with pytest.raises(ValueError, match="valid names: mimic-cxr, mgca-master, chexpert"):
        load_dataset_by_name("mimic", tmp_path)
    with pytest.raises(ValueError, match="Unknown option.*'uncertainty_policy'.*valid options: uncertainty"):
        load_dataset_by_name("chexpert", tmp_path, uncertainty_policy="ones")


def test_lazy_image_decoding_png_and_monochrome1_dicom(tmp_path):
    pixels = np.array([[0, 100], [200, 50]], dtype=np.uint8)
    dicom = write_dicom(tmp_path / "x.dcm", pixels, photometric="MONOCHROME1")
    decoded = np.asarray(load_image(dicom))
    assert decoded[0, 0] == 255 and decoded[1, 0] == 0  # inverted, min-max scaled
    write_image(tmp_path / "img/a.png", value=77)
    write_text(tmp_path / "t.csv", "image_path,text\nimg/a.png,x\n")
    dataset = with_lazy_images(load_dataset_by_name("csv", tmp_path / "t.csv", split="train"))
    assert np.asarray(dataset[0]["image"]).max() == 77


# ----------------------------------------------------------------------------------------------- place-prepare


def test_place_prepare_writes_tables_split_ids_and_manifest(tmp_path, capsys):
    root = write_chexpert(tmp_path / "chexpert")
    out = tmp_path / "prepared"
    code = prepare_main(["chexpert", "--root", str(root), "--out", str(out), "--format", "arrow", "csv",
                         "--set", "holdout_size=3", "--set", "uncertainty=ones"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == {"train": 15, "validation": 3, "test": 2}
    assert manifest["options"] == {"holdout_size": 3, "uncertainty": "ones"}
    from datasets import load_from_disk

    reloaded = load_from_disk(str(out / "dataset"))
    train_ids = (out / "splits" / "train.txt").read_text().split()
    assert train_ids == reloaded["train"]["image_id"] and len(train_ids) == 15
    assert all(i.startswith("train/patient") for i in train_ids)  # IDs only
    assert len(pd.read_csv(out / "tables" / "test.csv")) == 2
    assert prepare_main(["chexpert", "--root", str(root), "--out", str(out)]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_place_prepare_missing_layout_is_one_line_exit_2(tmp_path, capsys):
    code = prepare_main(["rsna", "--root", str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(tmp_path / "stage_2_train_labels.csv") in err and err.startswith("place-prepare: error:")
    with pytest.raises(SystemExit) as raised:
        prepare_main(["nonsense", "--root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert raised.value.code == 2


# ----------------------------------------------------------------------------------------------- malformed rows
# Issue 26: every reader checks each row against its format's rules and raises DatasetFormatError naming file,
# row and column, or (skip_bad_rows=True) skips, counts and reports the bad rows.

RSNA_HEADER = ["patientId", "x", "y", "width", "height", "Target"]


def write_rsna(root: Path, rows: list[list]) -> Path:
    write_text(root / "stage_2_train_labels.csv", csv_text(RSNA_HEADER, rows))
    for pid in dict.fromkeys(row[0] for row in rows):
        write_image(root / "stage_2_train_images_png" / f"{pid}.png")
    return root


@pytest.mark.parametrize(
    "bad_row, column, problem",
    [
        (["p9", None, None, None, None, 1], "x", "a blank cell is not a number"),  # positive without a box
        (["p9", None, None, None, None, 2], "Target", "2 is not one of 0, 1"),
        (["p9", 10, 20, "wide", 40, 1], "width", "'wide' is not a number"),
        (["p9", 1000, 20, 100, 40, 1], "width", "ends past the 1024-pixel image"),
        (["p9", -5, 20, 30, 40, 1], "x", "-5"),
        (["p9", 10, 20, 30, 40, 0], "x", "blank (Target = 0)"),  # a negative row carries no box
    ],
)
def test_rsna_malformed_row_is_named_or_skipped(tmp_path, bad_row, column, problem):
    root = write_rsna(tmp_path, [*RSNA_LABELS, bad_row])
    with pytest.raises(DatasetFormatError, match=re.escape(problem)) as raised:
        load_dataset_by_name("rsna", root, split_scheme="none")
    error = raised.value
    assert (Path(error.file).name, error.row, error.column) == ("stage_2_train_labels.csv", 6, column)
    data = load_dataset_by_name("rsna", root, split_scheme="none", skip_bad_rows=True)
    assert data.bad_rows.summary()["skipped"] == 1
    assert data.bad_rows.summary()["by_column"] == {f"stage_2_train_labels.csv: {column}": 1}
    assert "p9" not in data["train"]["patient_id"]  # its only row was bad
    assert all(np.isfinite(box).all() for boxes in data["train"]["boxes"] for box in boxes)
    assert set(data["train"]["Pneumonia"]) <= {0.0, 1.0}


def test_chexpert_label_yes_is_an_error_not_a_zero(tmp_path):
    root = write_chexpert(tmp_path)
    csv_path = root / "CheXpert-v1.0-small/train.csv"
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    frame.loc[2, "Edema"] = "yes"
    frame.loc[4, "Frontal/Lateral"] = "Oblique"
    frame.to_csv(csv_path, index=False)
    with pytest.raises(DatasetFormatError, match=r"train\.csv: row 3, column 'Edema': 'yes' is not one of 1\.0, 0\.0, -1\.0 or blank"):
        load_dataset_by_name("chexpert", root, holdout_size=3)
    data = load_dataset_by_name("chexpert", root, holdout_size=3, skip_bad_rows=True)
    assert data.bad_rows.summary()["by_column"] == {"train.csv: Edema": 1, "train.csv: Frontal/Lateral": 1}
    kept = {row["image_id"] for split in data.values() for row in split}
    assert not {f"train/patient0000{n}/study1/view1_frontal.jpg" for n in (3, 5)} & kept


def test_siim_invalid_rle_is_caught_at_read_time_with_image_id_row(tmp_path):
    lines = ["ImageId, EncodedPixels", f"{SIIM_IDS[0]}, {HAND_RLE}", f"{SIIM_IDS[1]}, 5 x 3",
             f"{SIIM_IDS[2]}, 1048570 10", f"{SIIM_IDS[3]}, 4 1 2"]
    write_text(tmp_path / "train-rle.csv", "\n".join(lines) + "\n")
    for image_id in SIIM_IDS:
        write_dicom(tmp_path / "dicom-images-train" / "a" / "b" / f"{image_id}.dcm", np.zeros((4, 3)))
    with pytest.raises(DatasetFormatError, match=r"train-rle\.csv: row 2, column 'EncodedPixels': RLE '5 x 3' contains a non-integer"):
        load_dataset_by_name("siim", tmp_path)
    data = load_dataset_by_name("siim", tmp_path, split_scheme="none", skip_bad_rows=True)
    summary = data.bad_rows.summary()
    assert summary["skipped"] == 3 and "past the 1048576 pixels" in " ".join(summary["examples"])
    assert "odd number" in " ".join(summary["examples"])
    assert data["train"]["image_id"] == [SIIM_IDS[0]]
    for row in data["train"]:
        decode_siim_mask(row["mask_rle"])  # every kept RLE decodes


def test_mimic_empty_headers_and_undecodable_report_file(tmp_path):
    root = write_mimic(tmp_path, reports="tree")
    write_text(root / "files/p10/p10000032/s53189527.txt", "FINDINGS:\nIMPRESSION:\n")  # headers only
    data = load_dataset_by_name("mimic-cxr", root)
    assert "test" not in data  # d3's study has no text: dropped like a study without a report
    assert all("FINDINGS" not in text.upper() for split in data.values() for text in split["text"])
    bad = root / "files/p11/p11000011/s51000001.txt"
    bad.write_bytes(b"FINDINGS: Heart size \xff normal.\n")  # Latin-1 byte, not UTF-8
    with pytest.raises(DatasetFormatError, match=re.escape(str(bad)) + r": row 1, column 'text': invalid UTF-8"):
        load_dataset_by_name("mimic-cxr", root)
    data = load_dataset_by_name("mimic-cxr", root, skip_bad_rows=True)
    assert data.bad_rows.summary()["skipped"] == 1 and "validation" not in data
    with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w") as archive:
        archive.writestr("files/p11/p11000011/s51000001.txt", b"\xfe\xff broken")
        archive.writestr("files/p10/p10000032/s50414267.txt", "FINDINGS: Clear.")
    with pytest.raises(DatasetFormatError, match=r"mimic-cxr-reports\.zip!files/p11/p11000011/s51000001\.txt"):
        load_dataset_by_name("mimic-cxr", root)


def test_mimic_label_and_split_cells_are_checked(tmp_path):
    root = write_mimic(tmp_path)
    write_text(root / "mimic-cxr-2.0.0-split.csv", "dicom_id,study_id,subject_id,split\nd1,50414267,10000032,training\n")
    with pytest.raises(DatasetFormatError, match=r"split\.csv: row 1, column 'split': 'training' is not one of"):
        load_dataset_by_name("mimic-cxr", root)


@pytest.mark.parametrize(
    "annotation, message",
    [("3 1 2 3 4", "unknown Object-CXR shape code '3'"), ("0 1 2 3", "needs an even number"),
     ("0 1 2 a 4", "non-numeric coordinate"), ("0 -1 2 3 4", "negative or non-finite")],
)
def test_object_cxr_bad_annotations(tmp_path, annotation, message):
    write_text(tmp_path / "train.csv", csv_text(["image_name", "annotation"], [["00001.jpg", ""], ["00002.jpg", annotation]]))
    write_text(tmp_path / "dev.csv", csv_text(["image_name", "annotation"], [["08001.jpg", ""]]))
    for name in ("train/00001.jpg", "train/00002.jpg", "dev/08001.jpg"):
        write_image(tmp_path / name)
    with pytest.raises(DatasetFormatError, match=r"train\.csv: row 2, column 'annotation': .*" + re.escape(message)):
        load_dataset_by_name("object-cxr", tmp_path)
    data = load_dataset_by_name("object-cxr", tmp_path, validation_fraction=0, skip_bad_rows=True)
    assert data["train"]["image_id"] == ["00001.jpg"] and data.bad_rows.summary()["skipped"] == 1


def test_nih_unknown_finding_and_box_outside_the_image(tmp_path):
    root = write_nih(tmp_path)
    write_text(root / "BBox_List_2017.csv", "Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000003_000.png,Nodule,1000,20,50,6,,,\n")
    with pytest.raises(DatasetFormatError, match=r"BBox_List_2017\.csv: row 1, column 'w'"):
        load_dataset_by_name("nih", root)
    assert load_dataset_by_name("nih", root, skip_bad_rows=True)["test"][0]["boxes"] == []
    rows = [*NIH_ROWS[:3], NIH_ROWS[3].replace("Nodule|Infiltration", "Nodule|Tumour")]
    write_text(root / "Data_Entry_2017_v2020.csv", "\n".join([NIH_HEADER, *rows]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"row 4, column 'Finding Labels': unknown finding label\(s\) \['Tumour'\]"):
        load_dataset_by_name("nih", root)


def test_generic_table_label_split_and_path_cells(tmp_path):
    write_image(tmp_path / "img" / "a.png")
    write_text(tmp_path / "t.csv", "image_path,text,split,pleural_effusion\nimg/a.png,A.,train,yes\n,B.,train,1\n"
               "img/a.png,C.,later,0\n[\"img/a.png\",C.,train,0\nimg/a.png,D.,test,-1\n")
    with pytest.raises(DatasetFormatError, match=r"t\.csv: row 1, column 'pleural_effusion': 'yes'"):
        load_dataset_by_name("csv", tmp_path / "t.csv")
    data = load_dataset_by_name("csv", tmp_path / "t.csv", skip_bad_rows=True)
    assert data.bad_rows.summary()["by_column"] == {"t.csv: pleural_effusion": 1, "t.csv: image_path": 2, "t.csv: split": 1}
    assert list(data) == ["test"] and data["test"][0]["text"] == "D." and data["test"][0]["Pleural Effusion"] == -1.0
    write_text(tmp_path / "t.jsonl", '{"image_path": "img/a.png", "text": "A."}\n\n{"image_path": [], "text": "B."}\n')
    with pytest.raises(DatasetFormatError, match=r"t\.jsonl: row 3, column 'image_path'"):  # row = line number
        load_dataset_by_name("csv", tmp_path / "t.jsonl")


def test_place_prepare_csv_with_float_list_cells_and_no_partial_output(tmp_path, capsys, monkeypatch):
    root = write_rsna(tmp_path / "rsna", RSNA_LABELS)
    out = tmp_path / "prepared"
    assert prepare_main(["rsna", "--root", str(root), "--out", str(out), "--format", "csv", "parquet", "arrow"]) == 0
    tables = pd.concat([pd.read_csv(path) for path in (out / "tables").glob("*.csv")])
    boxes = {pid: json.loads(cell) for pid, cell in zip(tables["patient_id"], tables["boxes"])}
    assert boxes["p1"] == [[100.0, 200.0, 150.0, 260.0], [300.0, 310.0, 320.0, 340.0]]
    assert json.loads((out / "manifest.json").read_text())["bad_rows"]["skipped"] == 0
    # A malformed row: one error line, exit 2, and neither OUT nor a staging folder is left behind.
    bad_root = write_rsna(tmp_path / "bad", [*RSNA_LABELS, ["p9", None, None, None, None, 2]])
    fresh = tmp_path / "fresh"
    capsys.readouterr()
    assert prepare_main(["rsna", "--root", str(bad_root), "--out", str(fresh), "--format", "csv"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("place-prepare: error:") and "row 6, column 'Target'" in err and len(err.splitlines()) == 1
    assert not fresh.exists() and not list(tmp_path.glob(".fresh*"))
    # A failure while writing (disk full, a bug...) leaves no partial OUT either, and keeps the old OUT whole.
    import modeling_place.data.prepare as prepare_module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(prepare_module, "write_split_ids", broken)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(OSError, match="disk full"):
        prepare_main(["rsna", "--root", str(root), "--out", str(out), "--format", "csv", "--overwrite"])
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not list(tmp_path.glob(".prepared*"))
    with pytest.raises(OSError, match="disk full"):
        prepare_main(["rsna", "--root", str(root), "--out", str(fresh), "--format", "arrow"])
    assert not fresh.exists() and not list(tmp_path.glob(".fresh*"))
    monkeypatch.undo()
    # skip_bad_rows: the counts reach the manifest and the summary line.
    assert prepare_main(["rsna", "--root", str(bad_root), "--out", str(fresh), "--set", "skip_bad_rows=true"]) == 0
    assert json.loads((fresh / "manifest.json").read_text())["bad_rows"]["skipped"] == 1
    assert "skipped 1 bad row(s)" in capsys.readouterr().out
