"""Tests for helpers.speed.measure and the measured choice of number format (helpers.speed.choose_number_format).

The candidates here are fakes that advance a fake clock by a chosen number of seconds per image,
so each test decides which one is fastest; nothing is timed for real.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

import helpers.speed.backbone as backbone_module
from helpers.speed import (
    CANDIDATES,
    MEASURE_MIN_IMAGES,
    SMALL_FOLDER,
    FastSettings,
    Measurement,
    candidates_here,
    choose_number_format,
    decisions_file,
    machine_key,
    remembered,
)
from helpers.speed.backbone import INT8_8BIT_CONV1, Backbone, _choice
from helpers.speed.int8 import FIRST_CONV_BITS, first_conv_8bit_unsafe_reason, recipe
from helpers.speed.measure import MAX_ROUNDING, Trial, measure, remember

IMAGES = torch.randn(8, 3, 16, 16)
BIG = 40_000
SLOW = 1.0  # seconds per image of a candidate a test does not mention: slower than any it does


class FakeClock:
    """A clock that only moves when a fake candidate says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_candidates(
    clock: FakeClock,
    seconds_per_image: dict[str, float],
    setup: dict[str, float] | None = None,
    noise: dict[str, float] | None = None,
    broken: tuple[str, ...] = (),
) -> dict:
    """Builders of fake runners: each advances `clock` by its seconds per image and returns
    features that differ from float32's by `noise` (relative); a `broken` one raises when built."""
    torch.manual_seed(0)
    reference = torch.rand(len(IMAGES), 512) + 0.5
    setup, noise = setup or {}, noise or {}

    def builder(name: str):
        def build():
            if name in broken:
                raise RuntimeError(f"{name} cannot be built here")
            clock.now += setup.get(name, 0.0)

            def run(images: torch.Tensor) -> torch.Tensor:
                clock.now += seconds_per_image[name] * len(images)
                return reference * (1 + noise.get(name, 0.0) * torch.randn_like(reference))

            return run

        return build

    return {name: builder(name) for name in seconds_per_image}


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path, monkeypatch):
    """Each test gets its own data folder, so no measurement is remembered from elsewhere."""
    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("WORKBOOK_INT8", raising=False)


@pytest.fixture
def all_candidates(monkeypatch):
    """As if every candidate could run on this machine."""

    def here(settings, device="cpu"):
        names = [name for name in CANDIDATES if not (name.startswith("int8") and settings.int8 is False)]
        return names, ([] if "int8" in names else ["int8 turned off in the settings"])

    monkeypatch.setattr(backbone_module, "candidates_here", here)


def measuring(clock: FakeClock, calls: list, **fakes):
    """A measure_here for choose_number_format that measures the fakes with the fake clock, counting its calls.

    A candidate the fakes' seconds_per_image do not mention takes SLOW seconds per image."""
    fakes["seconds_per_image"] = {**dict.fromkeys(CANDIDATES, SLOW), **fakes["seconds_per_image"]}

    def measure_here(names: list[str]) -> Measurement:
        calls.append(list(names))
        candidates = fake_candidates(clock, **fakes)
        return measure({name: candidates[name] for name in names}, IMAGES, machine_key(), clock=clock)

    return measure_here


@pytest.mark.parametrize("fastest", CANDIDATES)
def test_the_fastest_candidate_is_chosen_whichever_it_is(fastest, all_candidates, capsys):
    clock, calls = FakeClock(), []
    rates = {name: 0.05 if name == fastest else 0.1 for name in CANDIDATES}
    choice = choose_number_format(FastSettings(), "cpu", BIG, measuring(clock, calls, seconds_per_image=rates))
    assert choice.name == fastest and calls == [list(CANDIDATES)]
    assert choice.compiled == (fastest in ("bfloat16 compiled", "int8", INT8_8BIT_CONV1))
    assert choice.number_format == fastest.split()[0]
    assert choice.first_conv_bits == (8 if fastest == INT8_8BIT_CONV1 else FIRST_CONV_BITS)
    (line,) = capsys.readouterr().out.strip().splitlines()  # exactly one line: the rates and the choice
    assert line.endswith(f"-> {fastest}") or f"-> {fastest};" in line
    assert f"{fastest} 20 img/s" in line  # 8 images in 0.4 s; every other one 10 img/s
    assert all(f"{name} 10 img/s" in line for name in CANDIDATES if name != fastest)


def test_measure_takes_turns_and_reports_rates_setup_and_cost():
    clock = FakeClock()
    candidates = fake_candidates(clock, {"float32": 0.1, "int8": 0.02}, setup={"int8": 30.0})
    measurement = measure(candidates, IMAGES, "a machine", rounds=3, clock=clock)
    float32, int8 = measurement.trials
    assert float32.rate == pytest.approx(10.0) and int8.rate == pytest.approx(50.0)
    assert int8.setup_seconds == pytest.approx(30.0 + 0.02 * 8)  # the build and the warm-up call
    assert measurement.seconds == pytest.approx(30.0 + 4 * 8 * (0.1 + 0.02))  # warm-up + 3 rounds each
    assert "int8 50 img/s (set-up 30 s)" in measurement.summary()


def test_set_up_counts_for_the_folder_size(all_candidates):
    """int8 runs fastest but takes a minute to build: worth it for 40,000 images, not for 2,000."""
    clock = FakeClock()
    rates = {"float32": 0.1, "bfloat16": 0.05, "bfloat16 compiled": 0.04, "int8": 0.03}
    setup = {"bfloat16 compiled": 20.0, "int8": 60.0}
    measurement = measure(fake_candidates(clock, rates, setup), IMAGES, machine_key(), clock=clock)
    assert measurement.choose(BIG, CANDIDATES).name == "int8"
    assert measurement.choose(3_000, CANDIDATES).name == "bfloat16 compiled"
    assert measurement.choose(300, CANDIDATES).name == "bfloat16"
    assert measurement.choose(BIG, ["float32", "bfloat16"]).name == "bfloat16"


def test_a_remembered_measurement_is_reused_and_not_measured_again(all_candidates, capsys):
    clock, calls = FakeClock(), []
    rates = {"float32": 0.1, "bfloat16": 0.05, "bfloat16 compiled": 0.04, "int8": 0.02}
    first = choose_number_format(FastSettings(), "cpu", BIG, measuring(clock, calls, seconds_per_image=rates))
    assert first.name == "int8" and len(calls) == 1 and decisions_file().is_file()
    assert "measured on this machine" in capsys.readouterr().out
    again = choose_number_format(FastSettings(), "cpu", BIG, measuring(clock, calls, seconds_per_image=rates))
    assert again.name == "int8" and len(calls) == 1  # not measured again
    assert "measured on this machine earlier" in again.why and "int8 50 img/s" in again.why
    assert capsys.readouterr().out == ""  # nothing printed: nothing measured
    stored = json.loads(decisions_file().read_text())
    assert list(stored["machines"]) == [machine_key()]
    # another machine (or other torch / torchao versions) measures again
    other = Measurement("another CPU, 64 cores, torch 9.9, torchao 9.9", [Trial("float32", rate=1.0)])
    remember(other)
    assert remembered(other.machine).trials[0].rate == 1.0 and remembered(machine_key()) is not None
    stored = json.loads(decisions_file().read_text())
    stored["machines"].pop(machine_key())
    decisions_file().write_text(json.dumps(stored))
    choose_number_format(FastSettings(), "cpu", BIG, measuring(clock, calls, seconds_per_image=rates))
    assert len(calls) == 2


def test_a_damaged_decisions_file_measures_again(all_candidates):
    clock, calls = FakeClock(), []
    decisions_file().parent.mkdir(parents=True)
    decisions_file().write_text("{not json")
    rates = {name: 0.1 for name in CANDIDATES}
    choose_number_format(FastSettings(), "cpu", BIG, measuring(clock, calls, seconds_per_image=rates))
    assert len(calls) == 1 and remembered(machine_key()) is not None


def test_a_candidate_that_fails_or_rounds_too_much_is_skipped(all_candidates):
    clock, calls = FakeClock(), []
    rates = {"float32": 0.1, "bfloat16": 0.05, "bfloat16 compiled": 0.01, "int8": 0.005}
    noise = {"bfloat16": 1e-3, "int8": 0.5}  # int8 fastest but its features are far off
    choice = choose_number_format(
        FastSettings(),
        "cpu",
        BIG,
        measuring(clock, calls, seconds_per_image=rates, noise=noise, broken=("bfloat16 compiled",)),
    )
    assert choice.name == "bfloat16"
    trials = {trial.name: trial for trial in remembered(machine_key()).trials}
    assert trials["bfloat16 compiled"].skipped.startswith("failed: RuntimeError")
    assert "rounds too much" in trials["int8"].skipped and trials["int8"].rounding > MAX_ROUNDING
    assert not trials["bfloat16"].skipped and 0 < trials["bfloat16"].rounding < MAX_ROUNDING
    assert "bfloat16 compiled skipped (failed" in choice.why and "int8 skipped (rounds too much" in choice.why


def test_when_nothing_but_float32_works_float32_is_chosen(all_candidates):
    clock, calls = FakeClock(), []
    rates = {name: 0.1 for name in CANDIDATES}
    choice = choose_number_format(
        FastSettings(),
        "cpu",
        BIG,
        measuring(clock, calls, seconds_per_image=rates, broken=tuple(CANDIDATES[1:])),
    )
    assert choice.name == "float32"


def test_explicit_settings_and_workbook_int8_0_override_the_measurement(all_candidates, monkeypatch):
    clock, calls = FakeClock(), []
    rates = {"float32": 0.1, "bfloat16": 0.05, "bfloat16 compiled": 0.04, "int8": 0.02}
    measure_here = measuring(clock, calls, seconds_per_image=rates)
    assert choose_number_format(FastSettings(), "cpu", BIG, measure_here).name == "int8"
    assert choose_number_format(FastSettings(bf16=False, int8=False), "cpu", BIG, measure_here).name == "float32"
    assert choose_number_format(FastSettings(bf16=True), "cpu", BIG, measure_here).name == "bfloat16"
    assert choose_number_format(FastSettings(bf16=True, compile=True), "cpu", BIG).name == "bfloat16 compiled"
    monkeypatch.setattr(backbone_module, "int8_unavailable_reason", lambda device: None)
    assert choose_number_format(FastSettings(int8=True), "cpu", BIG).name == "int8"
    # int8=False: the fastest of the others, from the same measurement
    assert choose_number_format(FastSettings(int8=False), "cpu", BIG, measure_here).name == "bfloat16 compiled"
    assert len(calls) == 1


def test_workbook_int8_0_takes_int8_out_of_the_candidates(monkeypatch):
    monkeypatch.setattr(backbone_module, "int8_unavailable_reason", lambda device: None)
    monkeypatch.setattr(backbone_module, "int8_untested_reason", lambda: None)
    assert "int8" in candidates_here(FastSettings(), "cpu")[0]
    monkeypatch.setenv("WORKBOOK_INT8", "0")
    names, why_not = candidates_here(FastSettings(), "cpu")
    assert "int8" not in names and "WORKBOOK_INT8=0 turns int8 off" in why_not


def test_cpu_flags_only_rule_candidates_out(monkeypatch):
    monkeypatch.setattr(backbone_module, "bf16_is_fast", lambda device: False)  # emulated bfloat16
    names, why_not = candidates_here(FastSettings(), "cpu")
    assert "bfloat16" not in names and "bfloat16 compiled" not in names and any("emulated" in w for w in why_not)
    monkeypatch.setattr(backbone_module, "bf16_is_fast", lambda device: True)
    assert {"bfloat16", "bfloat16 compiled"} <= set(candidates_here(FastSettings(), "cpu")[0])
    assert "bfloat16 compiled" not in candidates_here(FastSettings(compile=False), "cpu")[0]
    assert "bfloat16" not in candidates_here(FastSettings(compile=True), "cpu")[0]


def test_small_or_unknown_folders_are_not_measured_and_say_so(all_candidates):
    clock, calls = FakeClock(), []
    measure_here = measuring(clock, calls, seconds_per_image={name: 0.1 for name in CANDIDATES})
    for size in (None, 100, SMALL_FOLDER - 1):
        choice = choose_number_format(FastSettings(), "cpu", size, measure_here)
        assert choice.name == "float32" and "too few to pay for measuring" in choice.why
    assert calls == [] and not decisions_file().exists()


def test_middle_sized_folders_measure_only_what_is_quick_to_build(all_candidates, capsys):
    clock, calls = FakeClock(), []
    rates = {"float32": 0.1, "bfloat16": 0.05, "bfloat16 compiled": 0.04, "int8": 0.02}
    choice = choose_number_format(
        FastSettings(),
        "cpu",
        MEASURE_MIN_IMAGES - 1,
        measuring(clock, calls, seconds_per_image=rates, setup={"int8": 30.0}),
    )
    assert calls == [["float32", "bfloat16"]]  # nothing compiled for a folder this size
    assert choice.name == "bfloat16" and f"bfloat16 compiled, int8, {INT8_8BIT_CONV1} not measured" in choice.why
    assert "-> bfloat16" in capsys.readouterr().out
    again = choose_number_format(FastSettings(), "cpu", SMALL_FOLDER, lambda names: pytest.fail("measured again"))
    assert again.name == "bfloat16" and "measured on this machine earlier" in again.why
    big = choose_number_format(FastSettings(), "cpu", BIG, measuring(clock, calls, seconds_per_image=rates))
    assert calls[-1] == list(CANDIDATES) and big.name == "int8"  # a big folder measures everything
    assert choose_number_format(FastSettings(), "cpu", SMALL_FOLDER, lambda names: pytest.fail("again")).name == "int8"


def test_a_middle_sized_folder_with_nothing_quick_to_compare_is_not_measured(monkeypatch):
    monkeypatch.setattr(backbone_module, "candidates_here", lambda settings, device="cpu": (["float32", "int8"], []))
    clock, calls = FakeClock(), []
    measure_here = measuring(clock, calls, seconds_per_image={name: 0.1 for name in CANDIDATES})
    choice = choose_number_format(FastSettings(), "cpu", MEASURE_MIN_IMAGES - 1, measure_here)
    assert choice.name == "float32" and "int8 must be compiled first" in choice.why
    assert calls == [] and not decisions_file().exists()
    alone = choose_number_format(FastSettings(), "cpu", MEASURE_MIN_IMAGES - 1)  # choose_number_format alone
    assert alone.name == "float32" and "not measured on this machine yet" in alone.why


def test_a_remembered_measurement_serves_middle_sized_folders_but_not_small_ones(all_candidates):
    clock, calls = FakeClock(), []
    rates = {"float32": 0.1, "bfloat16": 0.05, "bfloat16 compiled": 0.04, "int8": 0.02}
    choose_number_format(FastSettings(), "cpu", BIG, measuring(clock, calls, seconds_per_image=rates))
    middle = choose_number_format(FastSettings(), "cpu", SMALL_FOLDER, lambda names: pytest.fail("measured again"))
    assert middle.name == "int8" and "measured on this machine earlier" in middle.why
    assert choose_number_format(FastSettings(), "cpu", SMALL_FOLDER - 1).name == "float32"  # quick mode, tests


def test_gpus_are_not_measured(monkeypatch):
    monkeypatch.setattr(backbone_module, "bf16_is_fast", lambda device: True)
    choice = choose_number_format(FastSettings(), "cuda", BIG, lambda names: pytest.fail("measured a GPU"))
    assert choice.name == "bfloat16"


def test_an_unwritable_data_folder_still_chooses(all_candidates, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise OSError("read-only file system")

    monkeypatch.setattr(backbone_module, "remember", refuse)
    clock, calls = FakeClock(), []
    rates = {"float32": 0.1, "bfloat16": 0.05, "bfloat16 compiled": 0.04, "int8": 0.02}
    assert (
        choose_number_format(FastSettings(), "cpu", BIG, measuring(clock, calls, seconds_per_image=rates)).name
        == "int8"
    )
    assert "not kept: read-only file system" in capsys.readouterr().out


def test_a_mac_is_keyed_by_its_cpus_brand_not_by_arm(monkeypatch):
    import helpers.speed.measure as measure_module

    calls = []

    def sysctl(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="Apple M3 Pro\n", stderr="")

    monkeypatch.setattr(measure_module.sys, "platform", "darwin")
    monkeypatch.setattr(measure_module.subprocess, "run", sysctl)
    assert machine_key().startswith("Apple M3 Pro, ")
    assert ["sysctl", "-n", "machdep.cpu.brand_string"] in calls


@pytest.mark.parametrize(
    "capabilities, ruled_out",
    [
        ({}, True),  # torch before 2.8 has no get_capabilities: no flag known, 8 bits ruled out
        ({"avx2": True, "avx512_f": True, "avx512_vnni": False, "avx_vnni": False}, True),
        ({"avx512_vnni": True}, False),
        ({"avx_vnni": True}, False),
        ({"amx_int8": True}, False),
    ],
)
def test_8_bit_first_convolution_weights_are_ruled_out_without_vnni(capabilities, ruled_out, monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities, raising=False)
    reason = first_conv_8bit_unsafe_reason()
    assert (reason is not None) == ruled_out
    monkeypatch.setattr(backbone_module, "int8_unavailable_reason", lambda device: None)
    monkeypatch.setattr(backbone_module, "int8_untested_reason", lambda: None)
    names, why_not = candidates_here(FastSettings(), "cpu")
    assert "int8" in names and (INT8_8BIT_CONV1 not in names) == ruled_out
    assert any("no VNNI" in why for why in why_not) == ruled_out


def test_the_two_int8_candidates_compute_different_features_under_different_keys():
    """The measurement may pick either first convolution; the cache key says which computed the features."""
    model = torch.nn.Linear(1, 1)
    keys = {}
    for name in ("int8", INT8_8BIT_CONV1):
        way = _choice(name, "a test")
        assert way.name == name and way.number_format == "int8" and way.compiled
        backbone = Backbone(model, torch.device("cpu"), FastSettings(), "int8", "", "w", True, way.first_conv_bits)
        assert backbone.name == name
        keys[name] = backbone.key_part
    assert keys["int8"] != keys[INT8_8BIT_CONV1]
    # the default keeps the key it had before the 8-bit candidate, so caches computed earlier stay valid
    assert keys["int8"] == "int8|" + recipe() and "weights in 7 bits" in keys["int8"]
    assert "weights in 8 bits" in keys[INT8_8BIT_CONV1]


def test_the_first_convolutions_bits_can_be_set_and_a_wrong_value_says_what_to_do(monkeypatch):
    monkeypatch.setattr(backbone_module, "int8_unavailable_reason", lambda device: None)
    monkeypatch.setattr(backbone_module, "int8_untested_reason", lambda: None)
    monkeypatch.setattr(backbone_module, "first_conv_8bit_unsafe_reason", lambda: None)
    asked = choose_number_format(FastSettings(int8=True, int8_first_conv_bits=8), "cpu", BIG)
    assert (asked.name, asked.first_conv_bits) == (INT8_8BIT_CONV1, 8) and "int8_first_conv_bits=8" in asked.why
    assert choose_number_format(FastSettings(int8=True), "cpu", BIG).first_conv_bits == FIRST_CONV_BITS
    names, why_not = candidates_here(FastSettings(int8_first_conv_bits=7), "cpu")
    assert "int8" in names and INT8_8BIT_CONV1 not in names and any("turned off" in why for why in why_not)
    names, _ = candidates_here(FastSettings(int8_first_conv_bits=8), "cpu")
    assert INT8_8BIT_CONV1 in names and "int8" not in names
    for wrong in (0, 6, 9, "8", True):
        with pytest.raises(ValueError, match="takes 7, 8 or None"):
            choose_number_format(FastSettings(int8_first_conv_bits=wrong), "cpu", BIG)
