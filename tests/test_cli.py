import hashlib
import json

from serving.cli import main


def test_synth_inspect_convert_and_stats(tmp_path, capsys):
    out = tmp_path / "pa"
    assert main(["synth", "--kind", "periapical", "--n", "2", "--seed", "3", "--out", str(out), "--preview",
                 "--set", "scale=0.3"]) == 0
    assert (out / "preview.png").is_file()
    assert main(["inspect", str(out / "images" / "pa-s3-00000.dcm"), "--json"]) == 0
    assert main(["data", "convert", "--from", "coco", str(out / "annotations.json"), "--to", "yolo",
                 str(tmp_path / "yolo")]) == 0
    assert (tmp_path / "yolo" / "data.yaml").is_file()
    assert main(["data", "stats", "--format", "yolo", str(tmp_path / "yolo")]) == 0


def test_inspect_json_reports_reader_view(tmp_path, capsys):
    main(["synth", "--kind", "panoramic", "--n", "1", "--seed", "1", "--out", str(tmp_path), "--set", "scale=0.2"])
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "images" / "px-s1-00000.dcm"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["kind"] == "panoramic" and shown["modality"] == "PX" and shown["bits_stored"] == 12
    assert shown["transfer_syntax"] == "Explicit VR Little Endian"
    assert shown["sha256"] == hashlib.sha256((tmp_path / "images" / "px-s1-00000.dcm").read_bytes()).hexdigest()
    assert "PatientName" not in json.dumps(shown)
    assert shown["header"]["Modality"] == "PX" and shown["header"]["BitsStored"] == "12"  # read for inspect only


def test_bad_input_gives_code_and_exit_2(tmp_path, capsys):
    text = tmp_path / "note.dcm"
    text.write_text("not an image")
    assert main(["inspect", str(text)]) == 2
    assert "image.not_an_image" in capsys.readouterr().err
    assert main(["synth", "--kind", "bitewing", "--n", "1", "--out", str(tmp_path), "--set", "nope=1"]) == 2
    assert "config.invalid" in capsys.readouterr().err
