"""The Wav2Lip engine with a randomly initialised generator saved in the published checkpoint format.

No real weights are needed: what is tested is that published checkpoints load (both key styles,
the legacy and the zip serialisation, optimizer state included), that rendering keeps everything
outside the blended mask as the template's own, that the ONNX path draws the same frames, and that
files which are not such checkpoints are refused with messages that say why.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from koubo.cli import main as cli_main
from koubo.config import Settings
from koubo.engines.base import RenderInput, get_engine
from koubo.engines.blend import FADE_SECONDS, lower_face_hull, roi_around
from koubo.engines.wav2lip import TorchRunner, Wav2LipEngine, face_boxes
from koubo.engines.wav2lip_net import Wav2LipNet, load_generator
from koubo.engines.wav2lip_onnx import SHA_KEY, OnnxRunner, matching_export
from koubo.errors import Cancelled, EngineError
from koubo.face import geometry
from koubo.face.tracker import FaceTrack, track_faces
from koubo.features import compute_audio_features
from koubo.features.mouth import mouth_targets
from koubo.pipeline import GenerateOptions, Generator
from koubo.samples import synth_speech, talking_frame

from media_fixtures import make_speech, make_talking_video

FPS = 25.0
SIZE = (128, 128)
N_FRAMES = 30


def random_generator(seed: int = 0) -> Wav2LipNet:
    """Random weights, with batch-norm statistics moved off their defaults so every tensor matters."""
    torch.manual_seed(seed)
    net = Wav2LipNet()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return net.eval()


def save_published(net: Wav2LipNet, path: Path, *, prefixed: bool, legacy: bool) -> Path:
    """As Wav2Lip's training script saves: DataParallel keys, optimizer state, step and epoch."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    net.output_block[1].weight.grad = torch.zeros_like(net.output_block[1].weight)
    optimizer.step()  # creates per-parameter state tensors, as in a real training checkpoint
    state = {("module." if prefixed else "") + k: v for k, v in net.state_dict().items()}
    checkpoint = {"state_dict": state, "optimizer": optimizer.state_dict(), "global_step": 250000, "global_epoch": 7}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.fixture(scope="module")
def net() -> Wav2LipNet:
    return random_generator()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, net) -> Path:
    folder = tmp_path_factory.mktemp("models")
    save_published(net, folder / "wav2lip_gan.pth", prefixed=True, legacy=True)
    return folder


@pytest.fixture(scope="module")
def settings(models_dir) -> Settings:
    return Settings(data_dir=models_dir.parent / "data", models_dir=models_dir, device="auto")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.stack([talking_frame(i / FPS, SIZE) for i in range(N_FRAMES)])


@pytest.fixture(scope="module")
def track(frames) -> FaceTrack:
    return track_faces(frames, fps=FPS)


@pytest.fixture(scope="module")
def features():
    samples, _ = synth_speech(N_FRAMES / FPS)
    return compute_audio_features(samples, "synth")


def render_job(frames, track, features, present=None) -> RenderInput:
    if present is not None:
        track = FaceTrack(track.landmarks, present, track.width, track.height)
    n = len(frames)
    return RenderInput(
        frames=frames,
        fps=FPS,
        track=track,
        audio=features,
        targets=mouth_targets(features.envelope, FPS, n),
        source_index=np.arange(n),
    )


def outside_mask(frame_shape: tuple[int, ...], landmarks: np.ndarray) -> np.ndarray:
    """True where the blend may not change anything: outside the lower-face hull's bounding box."""
    x0, y0, x1, y1 = roi_around(
        lower_face_hull(landmarks), 0.02 * float(geometry.face_scale(landmarks)), frame_shape[:2]
    )
    keep = np.ones(frame_shape[:2], bool)
    keep[y0:y1, x0:x1] = False
    return keep


# --- checkpoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("prefixed", "legacy"), [(True, True), (False, False), (True, False)])
def test_published_checkpoint_loads_with_weights_only_in_both_key_styles(tmp_path, net, prefixed, legacy):
    path = save_published(random_generator(), tmp_path / "w.pth", prefixed=prefixed, legacy=legacy)
    expected = torch.load(path, weights_only=True)["state_dict"]
    loaded = load_generator(path).state_dict()
    assert len(loaded) == len(expected) == 352
    for key, value in expected.items():
        assert torch.equal(loaded[key.removeprefix("module.")], value)
    mel, face = torch.randn(2, 1, 80, 16), torch.rand(2, 6, 96, 96)
    with torch.inference_mode():
        out = load_generator(path)(mel, face)
    assert out.shape == (2, 3, 96, 96) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_without_pytorch_the_engine_says_how_to_install_it_and_the_rest_works(tmp_path):
    script = (
        # An import hook that answers `import torch` as an installation without it would.
        "import importlib.abc, sys\n"
        "class NoTorch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import koubo.cli, koubo.pipeline\n"
        "from koubo.config import Settings\n"
        "from koubo.engines.base import get_engine\n"
        "from koubo.errors import EngineError\n"
        "assert get_engine('classic').name == 'classic'\n"
        "assert koubo.cli.main(['export-wav2lip', '--checkpoint', sys.executable]) == 2\n"
        "try:\n"
        f"    get_engine('wav2lip', Settings(data_dir={str(tmp_path)!r}))\n"
        "except EngineError as e:\n"
        "    print(e.code, e.en, e.zh)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("engine_unavailable") and done.stdout.count("pip install koubo[wav2lip]") == 2


def test_missing_checkpoint_says_where_to_put_it(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(EngineError) as caught:
        get_engine("wav2lip", settings)
    expected = tmp_path / "data" / "models" / "wav2lip_gan.pth"
    assert caught.value.code == "checkpoint_missing"
    assert str(expected) in caught.value.en and str(expected) in caught.value.zh
    assert "never downloads" in caught.value.en


class NotWeights:
    """A pickled object of an arbitrary class: weights_only must refuse to build it."""


def _malformed(tmp_path: Path, net: Wav2LipNet, kind: str) -> Path:
    path = tmp_path / f"{kind}.pth"
    state = net.state_dict()
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "foreign_pickle":
        path.write_bytes(pickle.dumps({"state_dict": NotWeights()}, protocol=2))
    elif kind == "not_a_dict":
        torch.save([torch.zeros(3)], path)
    elif kind == "missing_keys":
        dropped = {k: v for k, v in state.items() if not k.startswith("output_block.")}
        torch.save({"state_dict": dropped}, path)
    elif kind == "unexpected_keys":
        torch.save({"state_dict": {**state, "module.binary_pred.0.weight": torch.zeros(1, 512, 1, 1)}}, path)
    elif kind == "wrong_shape":
        changed = dict(state)
        changed["face_encoder_blocks.0.0.conv_block.0.weight"] = torch.zeros(32, 6, 3, 3)
        torch.save({"state_dict": changed}, path)
    return path


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("random_bytes", ["not a PyTorch checkpoint"]),
        ("foreign_pickle", ["not a PyTorch checkpoint"]),
        ("not_a_dict", ["list", "state_dict"]),
        ("missing_keys", ["missing", "output_block.0.conv_block.0.weight"]),
        ("unexpected_keys", ["not part of", "binary_pred.0.weight"]),
        ("wrong_shape", ["face_encoder_blocks.0.0.conv_block.0.weight", "[32, 6, 3, 3]", "[16, 6, 7, 7]"]),
    ],
)
def test_malformed_checkpoints_are_refused_with_what_is_wrong(tmp_path, net, kind, words):
    path = _malformed(tmp_path, net, kind)
    with pytest.raises(EngineError) as caught:
        get_engine("wav2lip", Settings(data_dir=tmp_path, wav2lip_checkpoint=str(path)))
    error = caught.value
    assert error.code == "checkpoint_invalid"
    assert str(path) in error.en and str(path) in error.zh
    for word in words:
        assert word in error.en
    assert "Wav2Lip" in error.zh


# --- rendering -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(settings, frames, track, features) -> list[np.ndarray]:
    engine = get_engine("wav2lip", settings)
    assert isinstance(engine, Wav2LipEngine) and engine.runner.kind == "torch"
    return list(engine.render(render_job(frames, track, features)))


def test_render_keeps_size_and_length_and_changes_only_the_lower_face(rendered, frames, track):
    assert track.present.all()
    assert len(rendered) == N_FRAMES
    changed_inside = 0
    for out, frame, landmarks in zip(rendered, frames, track.landmarks):
        assert out.shape == frame.shape and out.dtype == np.uint8
        keep = outside_mask(frame.shape, landmarks)
        assert np.array_equal(out[keep], frame[keep])
        changed_inside += int(np.abs(out.astype(int) - frame).max(axis=2)[~keep].max() > 10)
    assert changed_inside == N_FRAMES  # the random generator's face visibly replaced every mouth


def test_face_boxes_cover_the_face_with_room_below_the_chin(track):
    boxes = face_boxes(track)
    chin = track.landmarks[:, 152]
    top = np.nanmin(track.landmarks[..., 1], axis=1)
    assert (boxes[:, 3] > chin[:, 1] + 1).all() and (boxes[:, 1] <= top + 1).all()
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert np.all(np.abs(width - height) <= 0.25 * height)  # square unless the frame's edge clips it
    assert np.abs(np.diff(boxes, n=2, axis=0)).max() <= 3  # smooth in time


def test_frames_without_a_face_pass_through_byte_identical(settings, frames, track, features, rendered):
    present = track.present.copy()
    present[8:14] = False
    out = list(get_engine("wav2lip", settings).render(render_job(frames, track, features, present=present)))
    for k in range(8, 14):
        assert out[k].tobytes() == frames[k].tobytes()
    # Frames with a face, beyond the edit's fade around the gap, are drawn as before: sharing a
    # batch with faceless frames changes nothing beyond float rounding.
    fade = round(FADE_SECONDS * FPS)
    for k in [*range(8 - fade), *range(13 + fade, N_FRAMES)]:
        assert np.abs(out[k].astype(int) - rendered[k]).max() <= 3
    # Inside the fade the edit weakens towards the gap: the frame next to it is nearer the template.
    assert np.abs(out[7].astype(int) - frames[7]).mean() < np.abs(out[8 - fade].astype(int) - frames[8 - fade]).mean()


def test_batch_size_halves_when_memory_runs_out(settings, frames, track, features, rendered, net):
    class LimitedMemory(TorchRunner):
        """The real generator on a device that holds at most 4 samples at once."""

        def __call__(self, mel, face):
            if len(face) > 4:
                raise MemoryError("out of memory")
            return super().__call__(mel, face)

    engine = Wav2LipEngine(
        settings, runner=LimitedMemory(load_generator(settings.models_path / "wav2lip_gan.pth"), "cpu")
    )
    engine.batch_size = 16
    out = list(engine.render(render_job(frames, track, features)))
    assert engine.batch_size == 4
    assert all(np.abs(a.astype(int) - b).max() <= 3 for a, b in zip(out, rendered))


def test_a_stop_request_cancels_the_render(settings, frames, track, features):
    frames_out = get_engine("wav2lip", settings).render(render_job(frames, track, features), should_stop=lambda: True)
    with pytest.raises(Cancelled):
        next(frames_out)


def test_onnx_export_draws_the_same_frames_and_a_stale_export_is_ignored(
    settings, models_dir, frames, track, features, rendered, tmp_path
):
    checkpoint = models_dir / "wav2lip_gan.pth"
    assert cli_main(["export-wav2lip", "--checkpoint", str(checkpoint)]) == 0
    exported = checkpoint.with_suffix(".onnx")
    runner = OnnxRunner(exported)
    assert len(runner.checkpoint_sha256 or "") == 64
    out = list(Wav2LipEngine(settings, runner=runner).render(render_job(frames, track, features)))
    diffs = [np.abs(a.astype(int) - b).max() for a, b in zip(out, rendered)]
    assert max(diffs) <= 2
    assert matching_export(checkpoint, runner.checkpoint_sha256, "cpu") is not None
    # With a matching export beside the checkpoint, the engine measures both and keeps the faster.
    assert get_engine("wav2lip", settings).runner.kind in ("torch", "onnxruntime")
    # Another checkpoint beside an export of the first: the export no longer belongs to it.
    other = save_published(random_generator(seed=5), tmp_path / "wav2lip_gan.pth", prefixed=True, legacy=False)
    exported_copy = other.with_suffix(".onnx")
    exported_copy.write_bytes(exported.read_bytes())
    assert OnnxRunner(exported_copy).session.get_modelmeta().custom_metadata_map[SHA_KEY] == runner.checkpoint_sha256
    from koubo.engines.checkpoint import file_sha256

    assert matching_export(other, file_sha256(other), "cpu") is None


# --- a whole job ---------------------------------------------------------------------------------


def test_generate_with_wav2lip_keeps_the_templates_size_length_and_audio(tmp_path, settings):
    video = make_talking_video(tmp_path / "template.mp4", seconds=1.2, fps=25, size=SIZE)
    audio = make_speech(tmp_path / "speech.wav", seconds=1.6)
    output = tmp_path / "out.mp4"
    generator = Generator(settings.model_copy(update={"data_dir": tmp_path / "data"}))
    result = generator.generate(audio, video, output, GenerateOptions(engine="wav2lip", check=False))
    assert result.engine == "wav2lip" and result.frames == 40
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == SIZE
        decoded = sum(1 for _ in container.decode(stream))
        assert decoded == 40
        assert len(container.streams.audio) == 1
        assert abs(float(container.streams.audio[0].duration * container.streams.audio[0].time_base) - 1.6) < 0.1


def test_a_job_choosing_wav2lip_without_a_checkpoint_fails_with_where_to_put_it(tmp_path):
    video = make_talking_video(tmp_path / "template.mp4", seconds=0.4, fps=25, size=SIZE)
    audio = make_speech(tmp_path / "speech.wav", seconds=0.4)
    generator = Generator(Settings(data_dir=tmp_path / "data"))
    with pytest.raises(EngineError) as caught:
        generator.generate(audio, video, tmp_path / "out.mp4", GenerateOptions(engine="wav2lip"))
    assert caught.value.code == "checkpoint_missing" and "models" in caught.value.en
    assert not (tmp_path / "out.mp4").exists()
