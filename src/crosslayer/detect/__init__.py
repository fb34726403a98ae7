"""Run-time layer: Selective Tile Processing for object detection on high-resolution video
(Plastiras et al., ICDSC 2018): tiling, memory and attention tile selection, detectors, detection metrics."""

from crosslayer.detect.attention import AttentionWeights, TileAttention, budget_tiles
from crosslayer.detect.compare import Comparison, compare_modes
from crosslayer.detect.detections import Detections, MalformedDetectionsError, validate_detections
from crosslayer.detect.detectors import Detector, HOGPeopleDetector, TinyCNNDetector, load_detector, run_detector
from crosslayer.detect.factory import build_detector, synthetic_sequences
from crosslayer.detect.memory import TileMemory
from crosslayer.detect.metrics import DetectionScores, evaluate_detections, relative_energy
from crosslayer.detect.pipeline import MODES, FrameOutput, FrameProcessor, STPConfig, VideoRun, process_video
from crosslayer.detect.tiling import crop_tiles, merge_tile_detections, resize_frame, tile_grid
from crosslayer.detect.trainer import DetectorTrainConfig, train_tiny_detector

__all__ = ["MODES", "AttentionWeights", "Comparison", "DetectionScores", "Detections", "Detector",
           "DetectorTrainConfig", "FrameOutput", "FrameProcessor", "HOGPeopleDetector", "MalformedDetectionsError",
           "STPConfig", "TileAttention", "TileMemory", "TinyCNNDetector", "VideoRun", "budget_tiles", "build_detector",
           "compare_modes", "crop_tiles", "evaluate_detections", "load_detector", "merge_tile_detections",
           "process_video", "relative_energy", "resize_frame", "run_detector", "synthetic_sequences", "tile_grid",
           "train_tiny_detector", "validate_detections"]
