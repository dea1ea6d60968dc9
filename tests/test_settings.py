"""helpers.settings: every WORKBOOK_* variable, its parser, the folders and the device choice."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from helpers import settings
from helpers.settings import (
    SettingsError,
    data_dir,
    default_checkpoint_path,
    env_flag,
    feature_cache_dir,
    pick_device,
    quick_mode,
)

HELPERS = Path(__file__).resolve().parent.parent / "helpers"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1", True),
        ("yes", True),
        ("ON", True),
        (" true ", True),
        ("0", False),
        ("no", False),
        ("Off", False),
        ("", False),
    ],
)
def test_yes_no_values(monkeypatch, value, expected):
    monkeypatch.setenv("WORKBOOK_OFFLINE", value)
    assert env_flag("WORKBOOK_OFFLINE") is expected


def test_a_bad_yes_no_value_names_the_variable_and_what_it_accepts(monkeypatch):
    monkeypatch.setenv("WORKBOOK_QUICK", "maybe")
    with pytest.raises(SettingsError, match=r"WORKBOOK_QUICK='maybe' .* use 1 .* or 0"):
        quick_mode()


def test_every_folder_follows_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("WORKBOOK_QUICK", "0")
    root = data_dir()
    assert root == (tmp_path / "elsewhere").resolve()
    for path in (
        settings.real_dir(),
        settings.synthetic_dir(),
        settings.downloads_dir(),
        feature_cache_dir(),
        settings.checkpoints_dir(),
        default_checkpoint_path(),
    ):
        assert root in path.parents
    assert default_checkpoint_path().name == "resnet18_cracks.pt"
    monkeypatch.setenv("WORKBOOK_QUICK", "1")
    assert default_checkpoint_path().name == "resnet18_cracks_quick.pt"
    assert settings.synthetic_dir().name == "synthetic_quick"


def test_pick_device_honours_the_setting(monkeypatch):
    monkeypatch.setenv("WORKBOOK_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.delenv("WORKBOOK_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else None
    assert pick_device().type in {expected or "cpu", "mps", "cpu"}


@pytest.mark.parametrize("value", ["banana", "cuda:7", "mps", "cuda"])
def test_a_device_this_machine_lacks_is_one_sentence_with_the_devices_it_has(monkeypatch, value):
    available = settings.available_devices()
    if value in available or (value == "cuda" and torch.cuda.is_available()):
        pytest.skip(f"{value} exists on this machine")
    monkeypatch.setenv("WORKBOOK_DEVICE", value)
    with pytest.raises(SettingsError) as error:
        pick_device()
    message = str(error.value)
    assert message.startswith(f"WORKBOOK_DEVICE={value!r}") and "\n" not in message
    assert all(device in message for device in available)
    with pytest.raises(SettingsError, match=f"device {value!r}"):
        pick_device(value)  # given in code: named as an argument, not as the variable


def test_there_are_seven_settings_and_no_other_module_reads_one():
    """Every WORKBOOK_* variable is read in helpers/settings.py, and os.environ nowhere else."""
    for path in HELPERS.rglob("*.py"):
        if path.name == "settings.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert "os.environ" not in text and "os.getenv" not in text, f"{path.name} reads the environment"
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(WORKBOOK_[A-Z0-9_]+)[=`]", readme, flags=re.MULTILINE))
    defined = {value for value in vars(settings).values() if isinstance(value, str) and value.startswith("WORKBOOK_")}
    assert documented == defined and len(documented) == 7


BAD_SETTINGS = [
    ("WORKBOOK_QUICK", "banana"),
    ("WORKBOOK_OFFLINE", "banana"),
    ("WORKBOOK_DEVICE", "banana"),
    ("WORKBOOK_DATA_DIR", "~nosuchuser-of-this-machine/x"),
    ("WORKBOOK_DATA_DIR", "A_FILE"),
    ("WORKBOOK_DATA_DIR", "A_FILE/below"),
    ("WORKBOOK_REAL_SAMPLE", "A_FILE"),
    ("WORKBOOK_DATASET", "A_FILE"),
]


@pytest.mark.parametrize("name, value", BAD_SETTINGS)
def test_validate_settings_names_any_bad_setting_in_one_sentence(monkeypatch, tmp_path, name, value):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    monkeypatch.setenv(name, value.replace("A_FILE", str(a_file)))
    with pytest.raises(SettingsError) as error:
        settings.validate_settings()
    message = str(error.value)
    assert message.startswith(name) and "\n" not in message and message.replace("e.g. ", "").count(". ") == 0


def test_validate_settings_accepts_the_defaults(monkeypatch):
    for name, _ in BAD_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    settings.validate_settings()


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["predict", "photo.jpg"],
        ["train"],
        ["data", "verify", "somewhere"],
        ["data", "synthetic"],
        ["strip"],
        ["lint"],
        ["format"],
        ["test"],
    ],
)
@pytest.mark.parametrize("name, value", [("WORKBOOK_QUICK", "banana"), ("WORKBOOK_DEVICE", "banana")])
def test_every_command_stops_on_a_bad_setting_before_any_work(monkeypatch, capsys, command, name, value):
    import helpers.__main__
    import helpers.commands
    from helpers.__main__ import main

    def no_work(*args, **kwargs):
        raise AssertionError("the command started its work with a bad setting")

    monkeypatch.setattr(helpers.commands, "run_all", no_work)
    monkeypatch.setattr(helpers.__main__.subprocess, "call", no_work)  # the lint tools, pytest, JupyterLab
    monkeypatch.setenv(name, value)
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {name}=") and len(err.splitlines()) == 1 and "Traceback" not in err
