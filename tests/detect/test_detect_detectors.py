from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from detect_helpers import BlobDetector, FixedInputDetector, square_frames

from crosslayer.detect.detections import MAX_DETECTIONS, Detections, MalformedDetectionsError, validate_detections
from crosslayer.detect.detectors import (
    HOGPeopleDetector,
    ScoreFilter,
    TinyCNNDetector,
    at_threshold,
    full_frame_macs,
    load_detector,
    run_detector,
)
from crosslayer.detect.metrics import evaluate_detections, relative_energy
from crosslayer.detect.tinynet import GridSpec, TinyGridDetector, count_macs, decode_grid, encode_targets
from crosslayer.errors import ConfigError, ModelError


def test_validation_rejects_malformed_boxes() -> None:
    ok = validate_detections([[0, 0, 5, 5]], [0.5], [1], num_classes=3)
    assert ok.boxes.shape == (1, 4) and ok.classes.dtype == np.int64
    assert len(validate_detections([], [], [])) == 0
    with pytest.raises(MalformedDetectionsError, match=r"\(N, 4\)"):
        validate_detections([[0, 0, 5]], [0.5], [0])
    with pytest.raises(MalformedDetectionsError, match="x2 <= x1"):
        validate_detections([[5, 0, 1, 5]], [0.5], [0])
    with pytest.raises(MalformedDetectionsError, match="NaN"):
        validate_detections([[0, 0, np.nan, 5]], [0.5], [0])
    with pytest.raises(MalformedDetectionsError, match="scores outside"):
        validate_detections([[0, 0, 5, 5]], [1.5], [0])
    with pytest.raises(MalformedDetectionsError, match="class ids"):
        validate_detections([[0, 0, 5, 5]], [0.5], [3], num_classes=3)
    with pytest.raises(MalformedDetectionsError, match="scores of shape"):
        validate_detections([[0, 0, 5, 5]], [0.5, 0.4], [0])
    with pytest.raises(MalformedDetectionsError, match="at most"):
        validate_detections(np.zeros((MAX_DETECTIONS + 1, 4)), np.zeros(MAX_DETECTIONS + 1), [0])


class _Bad(BlobDetector):
    def detect(self, tiles):  # type: ignore[no-untyped-def]
        return [Detections.empty()]  # one result for many tiles


def test_run_detector_checks_the_result_count() -> None:
    with pytest.raises(MalformedDetectionsError, match="1 results for 3 tiles"):
        run_detector(_Bad(), np.zeros((3, 128, 128, 3), np.uint8))


def test_user_detector_from_file(tmp_path: Path) -> None:
    helper = Path(__file__).with_name("detect_helpers.py")
    f = tmp_path / "mydet.py"
    f.write_text(f"import sys\nsys.path.insert(0, {str(helper.parent)!r})\nfrom detect_helpers import BlobDetector\n"
                 "def make():\n    return BlobDetector(size=64)\n")
    det = load_detector(f"{f}:make")
    assert det.input_size == (64, 64)
    frame = next(square_frames(1, size=(64, 64), objects=1))[0]
    assert len(run_detector(det, frame[None])[0]) == 1
    with pytest.raises(ModelError, match="does not exist"):
        load_detector(str(tmp_path / "nope.py") + ":make")
    with pytest.raises(ModelError, match="no callable"):
        load_detector(f"{f}:other")
    with pytest.raises(ConfigError, match="tiny"):
        load_detector("yolo")


def test_user_detector_code_that_fails_gives_one_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "bad.py"
    f.write_text("import numpy as np\n"
                 "def raises():\n    raise RuntimeError('no GPU found')\n"
                 "def wrong():\n    return 42\n"
                 "class Crashes:\n    input_size = (64, 64)\n    class_names = ('a',)\n    macs_per_tile = 1\n"
                 "    def detect(self, tiles):\n        raise ValueError('bad tile layout')\n"
                 "def crashes():\n    return Crashes()\n")
    with pytest.raises(ModelError, match="factory .*raises.* raised RuntimeError: no GPU found"):
        load_detector(f"{f}:raises")
    with pytest.raises(ModelError, match="not a detector"):
        load_detector(f"{f}:wrong")
    det = load_detector(f"{f}:crashes")
    with pytest.raises(ModelError, match="failed on 2 tiles of 64x64 px: ValueError: bad tile layout"):
        run_detector(det, np.zeros((2, 64, 64, 3), np.uint8))
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    with pytest.raises(ModelError, match="ModuleNotFoundError"):
        load_detector(f"{broken}:make")


def test_operating_threshold_equals_filtering_and_full_frames_need_any_size() -> None:
    torch.manual_seed(0)
    spec = GridSpec(num_classes=3)
    raw = torch.randn(3, 8, 16, 16) * 2  # grid outputs with spread scores and overlapping boxes
    base = decode_grid(raw, spec, conf_threshold=0.05)
    scores = np.concatenate([b.scores for b in base])
    assert len(scores) > 50 and scores.std() > 0.05
    for t in np.quantile(scores, [0.25, 0.5, 0.75]):  # decoding at t == decoding at 0.05, then keeping >= t
        for d, b in zip(decode_grid(raw, spec, conf_threshold=float(t)), base, strict=True):
            keep = b.take(b.scores >= t)
            assert np.array_equal(d.boxes, keep.boxes) and np.array_equal(d.scores, keep.scores)
    low = TinyCNNDetector(TinyGridDetector(spec), ("a", "b", "c"), (128, 128), conf_threshold=0.05)
    high = at_threshold(low, 0.4)
    assert isinstance(high, TinyCNNDetector) and high.conf_threshold == 0.4 and low.conf_threshold == 0.05
    assert isinstance(at_threshold(BlobDetector(), 0.5), ScoreFilter)
    assert full_frame_macs(low, 256, 128) == 2 * low.macs_per_tile
    assert full_frame_macs(at_threshold(BlobDetector(), 0.5), 256, 128) == 2000
    with pytest.raises(ConfigError, match="fixed input size"):
        full_frame_macs(FixedInputDetector(), 640, 360)


def test_grid_encode_decode_round_trip_and_macs() -> None:
    spec = GridSpec(num_classes=3)
    boxes = np.array([[10, 20, 40, 44], [70, 70, 90, 100]], np.float32)
    obj, box, cls = encode_targets([(boxes, np.array([2, 1]))], 8, 8, spec)
    assert obj.sum() == 2 and cls[0, 2, 1] == 2 and cls[0, 5, 5] == 1  # centres (25, 32) and (80, 85)
    # a perfect network output: logits from the targets
    out = torch.full((1, 8, 8, 8), -10.0)
    out[:, 0] = torch.where(obj > 0, 10.0, -10.0)
    b = box.clamp(1e-4, 1 - 1e-4)
    out[:, 1:3] = torch.log(b[:, :2] / (1 - b[:, :2]))
    out[:, 3:5] = box[:, 2:]
    out[:, 5:] = torch.nn.functional.one_hot(cls, 3).permute(0, 3, 1, 2).float() * 20
    dets = decode_grid(out, spec, conf_threshold=0.5)[0]
    order = np.argsort(dets.boxes[:, 0])
    assert np.allclose(dets.boxes[order], boxes, atol=0.05)
    assert dets.classes[order].tolist() == [2, 1]
    net = TinyGridDetector(spec)
    assert net(torch.zeros(2, 3, 128, 96)).shape == (2, 8, 8, 6)
    macs = count_macs(net, 384, 384)
    assert macs == 9 * count_macs(net, 128, 128)  # fully convolutional: cost scales with the area
    with pytest.raises(ConfigError, match="multiples"):
        TinyCNNDetector(net, ("a", "b", "c"), input_size=(100, 100))


def test_hog_detector_finds_vtest_pedestrians() -> None:
    video = Path(__file__).resolve().parents[3] / "shared" / "data" / "video" / "vtest.avi"
    if not video.is_file():
        pytest.skip("vtest.avi not in the offline data")
    from crosslayer.data.video import read_frames

    frame = read_frames(video, 1)[0]
    hog = HOGPeopleDetector(input_size=(256, 256))
    tile = frame[150:406, 180:436][None]
    dets = run_detector(hog, tile)[0]
    assert len(dets) >= 1 and hog.macs_per_tile > 0
    # the 64x128 window shrunk by Dalal & Triggs' 16-px margin: boxes of at least 32x96
    sides = dets.boxes[:, 2:] - dets.boxes[:, :2]
    assert (sides[:, 1] >= 95).all() and np.allclose(sides[:, 0] / sides[:, 1], 1 / 3, atol=0.02)
    windows = HOGPeopleDetector(input_size=(256, 256), person_box=False)
    w = run_detector(windows, tile)[0].boxes
    assert np.allclose((w[:, 2:] - w[:, :2])[:, 1] / (w[:, 2:] - w[:, :2])[:, 0], 2.0, atol=0.02)
    assert hog.macs_at(768, 576) > 3 * hog.macs_per_tile  # the pyramid grows with the area
    with pytest.raises(ConfigError, match="upscale"):
        HOGPeopleDetector(upscale=float("nan"))


def test_pycocotools_metrics_and_energy() -> None:
    gt = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.array([0, 1]))]
    perfect = [Detections(gt[0][0], np.array([0.9, 0.8], np.float32), np.array([0, 1]))]
    s = evaluate_detections(gt, perfect, num_classes=2)
    assert s.ap50 == pytest.approx(1.0) and s.recall == 1.0 and s.precision == 1.0
    half = [Detections(np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32), np.array([0.9, 0.8], np.float32),
                       np.array([0, 1]))]
    s = evaluate_detections(gt, half, num_classes=2)
    assert s.recall == 0.5 and s.precision == 0.5 and s.ap50 == pytest.approx(0.5)
    wrong_class = [Detections(gt[0][0], np.array([0.9, 0.8], np.float32), np.array([1, 0]))]
    assert evaluate_detections(gt, wrong_class, num_classes=2).recall == 0.0
    assert evaluate_detections(gt, wrong_class, num_classes=2, class_agnostic=True).recall == 1.0
    assert evaluate_detections(gt, [Detections.empty()], num_classes=2).recall == 0.0
    with pytest.raises(ConfigError, match="frames"):
        evaluate_detections(gt, [], num_classes=2)
    assert relative_energy(6, 1000) == 6000 and relative_energy(6, 1000, 0.5) == 3000
