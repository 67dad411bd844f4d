"""Bad labels files: names that leave the images folder, names with spaces, unreadable spreadsheets. One reader
(``data.read_labels``) serves training, evaluation, the audit and the studio, so each refuses them the same way."""
import os
import zipfile

import openpyxl
import pandas as pd
import pytest

from eye_clf import data
from eye_clf.__main__ import main
from eye_clf.audit import labeled
from eye_clf.data import LabelError, read_labels
from eye_clf.labels_store import LabelStore
from test_studio import eye

ESCAPES = ["../../outside/x.jpg", "sub/../../x.jpg", "/etc/passwd", "/no/such/file.jpg", "..", "..\\x.jpg",
           "C:x.jpg", "C:\\Windows\\x.jpg"]


@pytest.fixture
def images(tmp_path):
    """tmp/images/a.jpg, b.jpg (real images) and tmp/outside/x.jpg, an image beside the folder."""
    folder = tmp_path / "images"
    folder.mkdir()
    (tmp_path / "outside").mkdir()
    for i, path in enumerate([folder / "a.jpg", folder / "b.jpg", tmp_path / "outside" / "x.jpg"]):
        eye(i % 2, i).save(path, "JPEG")
    return folder


def labels(tmp_path, names, suffix=".xlsx", targets=None):
    path = tmp_path / f"labels{suffix}"
    df = pd.DataFrame({"img_name": names, "target": targets or [i % 2 for i in range(len(names))]})
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_excel(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_names_leaving_the_folder_are_refused_every_row_listed(tmp_path, images, suffix, monkeypatch):
    path = labels(tmp_path, ["a.jpg", *ESCAPES, "b.jpg"], suffix)
    touched = []

    def spy(real):  # every lookup of a file (exists, is_file, resolve...) goes through os.stat or os.lstat
        def look(where, *args, **kwargs):
            touched.append(os.path.normpath(os.fspath(where)) if isinstance(where, (str, os.PathLike)) else "")
            return real(where, *args, **kwargs)
        return look
    monkeypatch.setattr(os, "stat", spy(os.stat))
    monkeypatch.setattr(os, "lstat", spy(os.lstat))
    with pytest.raises(LabelError) as err:
        read_labels(path, images_dir=images)
    monkeypatch.undo()
    msg = str(err.value)
    assert f"{len(ESCAPES)} bad row(s)" in msg and "row 2 " not in msg
    for row, name in enumerate(ESCAPES, start=3):
        assert f"row {row} ({name}): img_name " in msg and "must be a relative path inside" in msg
    base = tmp_path.parent  # "../../outside/x.jpg" leads here
    inside = {str(base), str(tmp_path), str(path), str(images)}  # the labels file, the folder and the path to them
    outside = [t for t in touched if t.startswith(("/etc", "/no", "C:")) or t.startswith(str(base))
               and t not in inside and not t.startswith(str(images) + os.sep)]
    assert touched and not outside  # nothing outside the folder was looked at


def test_many_bad_rows_are_counted_beyond_the_first_ones(tmp_path, images):
    """A labels file for another folder (3,000 missing images) gives a readable error, not 3,000 lines."""
    missing = [f"{i:06d}.jpg" for i in range(3000)]
    with pytest.raises(LabelError) as err:
        read_labels(labels(tmp_path, ["a.jpg", *missing]), images_dir=images)
    lines = str(err.value).splitlines()
    assert lines[0].endswith("3000 bad row(s):") and len(lines) == LabelError.SHOWN + 2
    assert lines[1] == "  row 3 (000000.jpg): image file not found in " + str(images)
    assert lines[-1] == f"  ... and {3000 - LabelError.SHOWN} more"


def test_refusal_does_not_tell_whether_a_file_exists(tmp_path, images):
    msgs = []
    for name in ("/etc/passwd", "/no/such/file"):
        with pytest.raises(LabelError) as err:
            read_labels(labels(tmp_path, ["a.jpg", name]), images_dir=images)
        msgs.append(str(err.value).replace(name, "NAME"))
    assert msgs[0] == msgs[1]


def test_symlink_leaving_the_folder_is_refused(tmp_path, images):
    (images / "link.jpg").symlink_to(tmp_path / "outside" / "x.jpg")
    (images / "inner.jpg").symlink_to(images / "a.jpg")
    with pytest.raises(LabelError, match=r"row 3 \(link.jpg\): image resolves outside"):
        read_labels(labels(tmp_path, ["a.jpg", "link.jpg", "inner.jpg"]), images_dir=images)


def test_train_evaluate_audit_and_studio_refuse_escaping_rows(tmp_path, images, capsys):
    path = labels(tmp_path, ["a.jpg", "b.jpg", "../outside/x.jpg"])
    root = tmp_path / "data"
    root.mkdir()
    (root / "EyesDataset").symlink_to(images)
    with pytest.raises(LabelError, match=r"row 4 \(../outside/x.jpg\)"):
        data.load_dataset(root, labels=path)
    with pytest.raises(LabelError, match=r"row 4 \(../outside/x.jpg\)"):
        labeled(images, path)
    with pytest.raises(SystemExit, match=r"row 4 \(../outside/x.jpg\)"):
        main(["evaluate", "--images", str(images), "--labels", str(path)])
    with pytest.raises(SystemExit, match=r"row 4 \(../outside/x.jpg\)"):
        main(["audit", "--images", str(images), "--labels", str(path), "--oof", str(path)])
    studio_file = tmp_path / "studio.xlsx"
    path.rename(studio_file)
    with pytest.raises(LabelError, match=r"row 4 \(../outside/x.jpg\)"):
        LabelStore(studio_file, images)


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_names_are_matched_exactly_never_stripped(tmp_path, images, suffix):
    eye(1).save(images / " a.jpg", "JPEG")
    df = read_labels(labels(tmp_path, ["a.jpg", " a.jpg", "NA.jpg", "007"], suffix, [1, 0, 1, 0]))
    assert df["img_name"].tolist() == ["a.jpg", " a.jpg", "NA.jpg", "007"]
    with pytest.raises(LabelError, match=r"row 3 \(b.jpg \): image file not found"):
        read_labels(labels(tmp_path, ["a.jpg", "b.jpg "], suffix), images_dir=images)
    with pytest.raises(LabelError, match=r"row 3: img_name is empty"):
        read_labels(labels(tmp_path, ["a.jpg", "   "], suffix))


def not_a_zip(path):
    path.write_bytes(b"img_name,target\na.jpg,1\n")


def zip_without_workbook(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "not a workbook")


def truncated(path):
    pd.DataFrame({"img_name": ["a.jpg"], "target": [1]}).to_excel(path, index=False)
    path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize("make", [lambda p: p.write_bytes(b""), not_a_zip, zip_without_workbook, truncated])
def test_unreadable_xlsx_is_one_label_error_naming_the_file(tmp_path, make):
    path = tmp_path / "labels.xlsx"
    make(path)
    with pytest.raises(LabelError, match=f"^{path}: not a readable xlsx file"):
        read_labels(path)


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_blank_rows_are_skipped_and_rows_keep_their_numbers_in_the_file(tmp_path, images, suffix):
    """Blank lines (rows) above, between and below the labels are nothing, and messages count them as the file
    does. Row 1 is the header, row 2 a.jpg, row 5 the bad target: its line in a text editor, its row in Excel."""
    path = tmp_path / f"labels{suffix}"
    rows = [["img_name", "target"], ["a.jpg", 1], [], [], ["b.jpg", 7], []]
    if suffix == ".csv":
        path.write_text("\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n\n")
        bad = 6  # the blank first line shifts every row by one
    else:
        book = openpyxl.Workbook()
        for r in rows:
            book.active.append(r)
        book.save(path)
        bad = 5
    with pytest.raises(LabelError, match=rf"1 bad row\(s\):\n  row {bad} \(b.jpg\): target 7(\.0)? is not 0, 1$"):
        read_labels(path, images_dir=images)
    text = path.read_text() if suffix == ".csv" else None
    if text:
        path.write_text(text.replace("b.jpg,7", "b.jpg,0"))
        assert read_labels(path, images_dir=images)["target"].tolist() == [1, 0]


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_the_header_is_the_first_row_that_is_not_blank(tmp_path, images, suffix):
    """Blank rows above the header (in Excel's CSV export ",,"), and rows of spaces, are skipped."""
    path = tmp_path / f"labels{suffix}"
    rows = [[None, None], [" ", None], ["img_name", "target"], ["a.jpg", 1], ["  ", " "], ["b.jpg", 7]]
    if suffix == ".csv":
        path.write_text("\n".join(",".join("" if v is None else str(v) for v in r) for r in rows) + "\n")
    else:
        book = openpyxl.Workbook()
        for r in rows:
            book.active.append(r)
        book.save(path)
    with pytest.raises(LabelError, match=r"1 bad row\(s\):\n  row 6 \(b.jpg\): target 7 is not 0, 1$"):
        read_labels(path, images_dir=images)


def test_csv_cells_are_numbers_only_when_written_as_plain_decimals(tmp_path, images):
    """Booleans as pandas and Excel write them count as 1/0; "nan", "0_1" and non-ASCII digits stay text."""
    path = tmp_path / "labels.csv"
    path.write_text("img_name,target\na.jpg,True\nb.jpg,FALSE\n")
    assert read_labels(path, images_dir=images)["target"].tolist() == [1, 0]
    path.write_text("img_name,target\na.jpg, 1.0 \nb.jpg,0e0\n")
    assert read_labels(path, images_dir=images)["target"].tolist() == [1, 0]
    path.write_text("img_name,target\na.jpg,1\u00a0\nb.jpg,\u20090\n")  # padded with (thin) non-breaking spaces
    assert read_labels(path, images_dir=images)["target"].tolist() == [1, 0]
    path.write_text("img_name,target\na.jpg,nan\nb.jpg,0_1\n\u00a0,\n")
    with pytest.raises(LabelError) as err:
        read_labels(path, images_dir=images)
    for part in ("row 2 (a.jpg): target 'nan' is not 0, 1", "row 3 (b.jpg): target '0_1' is not 0, 1"):
        assert part in str(err.value)
    path.write_text("img_name,target\na.jpg,\u0661\nb.jpg,\uff10\n")  # Arabic-Indic one, fullwidth zero
    with pytest.raises(LabelError) as err:
        read_labels(path, images_dir=images)
    for part in ("row 2 (a.jpg): target '\u0661' is not 0, 1", "row 3 (b.jpg): target '\uff10' is not 0, 1"):
        assert part in str(err.value)


def test_a_blank_target_is_named_blank_not_nan(tmp_path, images):
    path = tmp_path / "labels.csv"
    path.write_text("img_name,target\na.jpg,1\nb.jpg,\n")
    with pytest.raises(LabelError, match=r"row 3 \(b.jpg\): target is blank \(not labelled yet, or a formula or "
                                         r"error cell with no saved value\)$"):
        read_labels(path, images_dir=images)


def test_a_row_the_studio_marked_unsure_is_named_so_for_training(tmp_path, images):
    path = tmp_path / "labels.csv"
    path.write_text("img_name,target,unsure\na.jpg,1,0\nb.jpg,,1\n")
    with pytest.raises(LabelError, match=r"row 3 \(b.jpg\): target is blank: the studio marked the image unsure "
                                         r"\(label it there, or delete the row, to use this file\)$"):
        read_labels(path, images_dir=images)
    assert read_labels(path, images_dir=images, partial=True)["unsure"].tolist() == [0, 1]


def test_a_sheet_spanning_far_beyond_its_table_is_refused_before_pandas_fills_it(tmp_path, monkeypatch):
    path = tmp_path / "labels.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["img_name", "target"])
    book.active.append(["a.jpg", 1])
    book.active["Z100"] = " "  # a stray cell (in a real file: XFD1048576, 17 billion cells to fill)
    book.save(path)
    monkeypatch.setattr(data, "MAX_CELLS", 1000)
    with pytest.raises(LabelError, match=r"labels.xlsx: its first sheet spans A1:Z100 \(100 rows x 26 columns\), "
                                         r"far more than a labels table: delete the stray cells \(with a value or "
                                         r"only formatting\) out to its last row or column, as far as Z100"):
        read_labels(path)
    monkeypatch.setattr(data, "MAX_CELLS", 2600)
    assert read_labels(path)["target"].tolist() == [1]


def test_a_leading_line_of_non_breaking_spaces_or_empty_quotes_is_blank(tmp_path, images):
    path = tmp_path / "labels.csv"
    for lead in ("\u00a0", '""', '"",""'):
        path.write_text(f"{lead}\nimg_name,target\na.jpg,1\nb.jpg,7\n")
        with pytest.raises(LabelError, match=r"row 4 \(b.jpg\): target 7 is not 0, 1$"):
            read_labels(path, images_dir=images)


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_a_column_named_twice_is_refused(tmp_path, suffix):
    path = tmp_path / f"labels{suffix}"
    df = pd.DataFrame([["a.jpg", 1, 0]], columns=["img_name", "target", "target"])
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_excel(path, index=False)
    with pytest.raises(LabelError, match=r"column\(s\) named twice in the header \(row 1\): \['target'\]"):
        read_labels(path)


def test_blank_lines_in_annotations_and_out_of_fold_files_are_skipped(tmp_path):
    from eye_clf.audit import read_oof
    (tmp_path / "EyesDataset").mkdir()
    (tmp_path / "other_annotations.csv").write_text("img_name,annotator_a\na.jpg,1\n\n\nb.jpg,0\n\n")
    assert data.read_annotations(["b.jpg", "a.jpg"], tmp_path).tolist() == [[0.0], [1.0]]
    (tmp_path / "oof.csv").write_text("img_name,p_open\na.jpg,0.2\n\n\nb.jpg,7\n")
    with pytest.raises(ValueError, match=r"row 5 \(b.jpg\): 7"):
        read_oof(tmp_path / "oof.csv", ["a.jpg", "b.jpg"])


def test_latin1_csv_is_refused_as_not_utf8_and_a_bom_is_fine(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes("img_name,target\ncaf\xe9.jpg,1\n".encode("latin-1"))
    with pytest.raises(LabelError, match=f"^{path}: not UTF-8 text \\(byte 0xe9 at offset 19\\)"):
        read_labels(path)
    path.write_bytes("img_name,target\ncaf\xe9.jpg,1\n".encode("utf-8-sig"))
    assert read_labels(path)["img_name"].tolist() == ["caf\xe9.jpg"]


def test_studio_names_the_unreadable_labels_file(tmp_path, images):
    path = tmp_path / "labels.xlsx"
    path.write_bytes(b"")
    with pytest.raises(LabelError, match=f"^{path}: not a readable xlsx file"):
        LabelStore(path, images)


def test_a_name_with_a_line_break_is_refused_with_its_row(tmp_path, images):
    """In a CSV a quoted cell across lines would also shift the row numbers of every later error."""
    for suffix in (".csv", ".xlsx"):
        path = labels(tmp_path, ["a.jpg", "b\n.jpg"], suffix)
        with pytest.raises(LabelError, match=r"row 3 \(b\n.jpg\): img_name contains a control character"):
            read_labels(path, images)


def test_an_empty_first_sheet_says_so_and_names_the_sheets(tmp_path):
    """A new workbook saved empty, or labels typed on its second sheet: eye_clf reads only the first."""
    book = openpyxl.Workbook()
    book.save(tmp_path / "empty.xlsx")
    with pytest.raises(LabelError, match=r"empty.xlsx: empty file$"):
        read_labels(tmp_path / "empty.xlsx")
    book.active.title = "Notes"
    book.create_sheet("Labels").append(["img_name", "target"])
    book.save(tmp_path / "second.xlsx")
    with pytest.raises(LabelError, match=r"second.xlsx: empty file \(only the first of its sheets \['Notes', "
                                         r"'Labels'\] is read\)"):
        read_labels(tmp_path / "second.xlsx")
    book["Notes"].append(["to do"])
    book.save(tmp_path / "second.xlsx")
    with pytest.raises(LabelError, match=r"missing column\(s\) \['img_name', 'target'\]; found \['to do'\] \(only "
                                         r"the first of its sheets"):
        read_labels(tmp_path / "second.xlsx")


def test_odd_files_and_names_get_a_label_error_naming_them(tmp_path, images):
    """A folder as the labels file, a name too long for the file system, a symlink loop, a file that is not an
    xlsx inside: one LabelError (or the studio's ValueError), never a raw OSError or RuntimeError."""
    (tmp_path / "dir.xlsx").mkdir()
    with pytest.raises(LabelError, match=r"dir.xlsx: a folder, not a labels file"):
        read_labels(tmp_path / "dir.xlsx")
    with pytest.raises(ValueError, match=r"dir.xlsx: a folder, not a labels file"):
        LabelStore(tmp_path / "dir.xlsx", images)
    (images / "loop.jpg").symlink_to("loop.jpg")
    long = "x" * 300 + ".jpg"
    with pytest.raises(LabelError) as err:
        read_labels(labels(tmp_path, ["a.jpg", long, "loop.jpg"]), images_dir=images)
    assert f"row 3 ({long}): image file cannot be looked up in {images} (File name too long)" in str(err.value)
    assert "row 4 (loop.jpg): image is a symlink loop" in str(err.value)
    (tmp_path / "old.xlsx").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(60))  # an OLE file: .xls, or encrypted
    with pytest.raises(LabelError, match=r"old.xlsx: not a readable xlsx file \(BadZipFile: .*\); save it as an Excel "
                                         r"Workbook \(.xlsx\) or as CSV UTF-8"):
        read_labels(tmp_path / "old.xlsx")


@pytest.mark.filterwarnings("ignore:File contains an invalid specification")  # openpyxl's, on the way
def test_a_strict_open_xml_file_is_named(tmp_path):
    """Excel's "Strict Open XML Spreadsheet" uses other namespaces, and openpyxl finds no worksheet in it."""
    normal = labels(tmp_path, ["a.jpg"])
    strict = tmp_path / "strict.xlsx"
    with zipfile.ZipFile(normal) as src, zipfile.ZipFile(strict, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item)
                         .replace(b"http://schemas.openxmlformats.org/spreadsheetml/2006/main",
                                  b"http://purl.oclc.org/ooxml/spreadsheetml/main")
                         .replace(b"http://schemas.openxmlformats.org/officeDocument/2006/relationships",
                                  b"http://purl.oclc.org/ooxml/officeDocument/relationships"))
    with pytest.raises(LabelError, match=r"strict.xlsx: no worksheet that openpyxl can read \(a Strict Open XML "
                                         r"file\?\); save it as an Excel Workbook"):
        read_labels(strict)


def test_a_name_that_differs_only_in_unicode_normalization_is_pointed_out(tmp_path, images):
    """macOS writes file names decomposed (NFD); a spreadsheet usually holds them composed (NFC)."""
    composed, decomposed = "\u00e9.jpg", "e\u0301.jpg"
    eye(1).save(images / decomposed, "JPEG")
    with pytest.raises(LabelError) as err:
        read_labels(labels(tmp_path, ["a.jpg", composed]), images_dir=images)
    assert f"row 3 ({composed}): image file not found in {images} ({decomposed!r} is there: the same name in " \
           "another Unicode normalization; rename one)" in str(err.value)


@pytest.mark.parametrize("text,message", [
    ('img_name,target\na.jpg,1\nb.jpg,0\nc.jpg,"1\nd.jpg,0\n', r"the quote opened on line 4 is never closed\)$"),
    ('\n\nimg_name,target\na.jpg,1\nb.jpg,"0\n', r"the quote opened on line 5 is never closed\)$"),
    ("img_name,target\na.jpg,1,\n", r"line 2 has 3 fields where the header has 2: a comma too many"),
    ("\nimg_name,target\na.jpg,1\nb,c.jpg,0\n", r"line 4 has 3 fields where the header has 2"),
])
def test_a_csv_the_parser_refuses_names_the_line_as_an_editor_counts_it(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(LabelError, match=r"labels.csv: not a readable CSV file \(" + message):
        read_labels(path)


@pytest.mark.parametrize("text", ["img_name;target\na.jpg;1\nb.jpg;0\n",
                                  "\nimg_name;target;p_open\na.jpg;1;0,95\n"])  # decimal commas too
def test_a_semicolon_separated_csv_is_named_so(tmp_path, text):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    line = 1 + text.startswith("\n")
    with pytest.raises(LabelError, match=rf"labels.csv: line {line} is separated by semicolons, not commas \(as "
                                         r"Excel saves CSV where the decimal mark is a comma\): save it as an Excel"):
        read_labels(path)
