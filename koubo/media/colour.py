"""What a video's samples mean as colours, carried from the template to the output.

A template is decoded to RGB with its own matrix and range (swscale reads them from each frame),
and `yuv420p_frame` encodes RGB back with the same matrix and range, so the output's Y'CbCr
samples are the template's own. The output is tagged with the template's description; an untagged
template gives an untagged output, so whatever a player guesses (mpv, for one, guesses by frame
size) it guesses the same for both and shows the output as it showed the template.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import cv2
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorTrc

__all__ = ["Colour", "yuv420p_frame"]

# FFmpeg's AVColorSpace, AVColorRange, AVColorPrimaries and AVColorTransferCharacteristic codes.
_SPC_BT709, _SPC_UNSPECIFIED, _SPC_FCC, _SPC_BT470BG, _SPC_SMPTE170M = 1, 2, 4, 5, 6
_SPC_SMPTE240M, _SPC_BT2020_NCL, _SPC_BT2020_CL = 7, 9, 10
_RANGE_UNSPECIFIED, _RANGE_MPEG, _RANGE_JPEG = 0, 1, 2
_UNSPECIFIED = 2  # the same code for primaries and transfer
# Reserved or unknown codes in a template's header are not passed on: x264 refuses some.
_PRIMARIES = frozenset(p.value for p in ColorPrimaries)
_TRANSFERS = frozenset(t.value for t in ColorTrc)

# Luma weights (Kr, Kb) of each matrix koubo encodes with. swscale decodes an untagged matrix as
# BT.601, so an untagged output is encoded as BT.601 too: what comes back is what went in.
_WEIGHTS = {
    _SPC_BT709: (0.2126, 0.0722),
    _SPC_UNSPECIFIED: (0.299, 0.114),
    _SPC_FCC: (0.30, 0.11),
    _SPC_BT470BG: (0.299, 0.114),
    _SPC_SMPTE170M: (0.299, 0.114),
    _SPC_SMPTE240M: (0.212, 0.087),
    _SPC_BT2020_NCL: (0.2627, 0.0593),
}


@dataclass(frozen=True)
class Colour:
    """A video's colour description: FFmpeg's codes for its matrix, primaries and transfer."""

    matrix: int = _SPC_UNSPECIFIED
    full_range: bool = False
    primaries: int = _UNSPECIFIED
    transfer: int = _UNSPECIFIED

    @classmethod
    def of_frame(cls, frame: av.VideoFrame) -> Colour:
        """The description a decoded template frame carries (from its stream's headers).

        Matrices koubo does not encode with (RGB, YCgCo, ICtCp: rare in templates) are decoded
        by swscale from their own tag and written out as BT.709.
        """
        full_range = frame.color_range == _RANGE_JPEG or frame.format.name.startswith("yuvj")
        matrix = _SPC_BT2020_NCL if frame.colorspace == _SPC_BT2020_CL else frame.colorspace
        return cls(
            matrix=matrix if matrix in _WEIGHTS else _SPC_BT709,
            full_range=full_range,
            primaries=frame.color_primaries if frame.color_primaries in _PRIMARIES else _UNSPECIFIED,
            transfer=frame.color_trc if frame.color_trc in _TRANSFERS else _UNSPECIFIED,
        )

    @property
    def color_range(self) -> int:
        return _RANGE_JPEG if self.full_range else _RANGE_MPEG

    def tag(self, target: av.VideoFrame | av.video.codeccontext.VideoCodecContext) -> None:
        """Write this description onto an encoder (it goes into the H.264 VUI) or a frame."""
        target.colorspace, target.color_range = self.matrix, self.color_range
        target.color_primaries, target.color_trc = self.primaries, self.transfer

    def rgb_to_ycbcr(self) -> np.ndarray:
        """3x4 matrix taking [R, G, B, 1] (0-255) to this description's 8-bit [Y', Cb, Cr]."""
        kr, kb = _WEIGHTS[self.matrix]
        luma = np.array([kr, 1.0 - kr - kb, kb])
        cb = (np.array([0.0, 0.0, 1.0]) - luma) / (2 * (1 - kb))
        cr = (np.array([1.0, 0.0, 0.0]) - luma) / (2 * (1 - kr))
        y_scale, c_scale, y_offset = (1.0, 1.0, 0.0) if self.full_range else (219 / 255, 224 / 255, 16.0)
        return np.array(
            [[*(luma * y_scale), y_offset], [*(cb * c_scale), 128.0], [*(cr * c_scale), 128.0]], dtype=np.float32
        )


def yuv420p_frame(rgb: np.ndarray, colour: Colour) -> av.VideoFrame:
    """An (H, W, 3) uint8 RGB picture with even H and W as a yuv420p frame in `colour`.

    Each plane is filled through its own line size: PyAV's from_ndarray/from_numpy_buffer infer
    the height of a packed I420 buffer as rows // 6 * 4, which misplaces both chroma planes of
    any picture whose height is 2 more than a multiple of 4 (590, 1078, 1350).
    """
    height, width = rgb.shape[:2]
    matrix = colour.rgb_to_ycbcr()
    # cv2 has a fast path for 3-row transforms only, so luma comes with a full-size Cb and Cr it
    # does not use; chroma is averaged over 2x2 RGB pixels (centred, like swscale's) first. The
    # fast path rounds coefficients to 1/1024, which costs ~0.1 dB against swscale (bench/colour.py)
    # for several times its speed.
    full = cv2.transform(rgb, matrix)
    half = cv2.transform(cv2.resize(rgb, (width // 2, height // 2), interpolation=cv2.INTER_AREA), matrix)
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, (source, channel) in zip(frame.planes, ((full, 0), (half, 1), (half, 2)), strict=True):
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
        rows[:, : plane.width] = cv2.extractChannel(source, channel)  # a strided numpy copy is 10x slower
    colour.tag(frame)
    return frame
