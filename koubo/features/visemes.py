"""Timed phones -> lip shape every 10 ms, with coarticulation.

Each phone asks for a lip shape (its viseme) with some insistence (its dominance). Following
Cohen and Massaro's coarticulation model, a phone's dominance is full over its own span and
decays with the distance from it (exp(-(d / reach)^2): Cohen and Massaro's exponent c = 2, so a
strong phone like /m/ or /f/ bends its neighbours' edges without reaching across them), further ahead of the phone than after it (lips
round before an /u/ is heard and close before an /m/); each frame's shape is the
dominance-weighted mean of all phones' targets. A phone that barely uses the lips (/k/, /h/)
has little dominance over them, so its lips take the shape of the vowels around it, while
/m b p/ dominate the opening so strongly that the lips really meet.

The jaw (opening, teeth, closure, lower lip on the teeth) and the lips' shape (spread, rounding) are
blended with separate dominances and time constants, since /t/ constrains the jaw but leaves
the lips free, and rounding spreads over more neighbours than opening does.
"""

from __future__ import annotations

import numpy as np

from koubo.features.phones import PHONE_RATE, SILENCE, PhoneTrack

CHANNELS = ("aperture", "spread", "rounding", "closure", "teeth", "labiodental")
_JAW = [0, 3, 4, 5]  # channels blended with the jaw dominance (the lower lip rides on it)
_LIPS = [1, 2]  # channels blended with the lip-shape dominance

# ARPAbet phone: (aperture, spread, rounding, closure, teeth, labiodental), jaw dominance,
# lip-shape dominance. Aperture 1 = an open /a/; spread and rounding 0..1.
_VISEMES: dict[str, tuple[tuple[float, float, float, float, float, float], float, float]] = {
    # vowels
    "AA": ((1.00, 0.10, 0.00, 0.0, 0.50, 0.0), 1.0, 1.0),
    "AE": ((0.85, 0.50, 0.00, 0.0, 0.70, 0.0), 1.0, 1.0),
    "AH": ((0.65, 0.20, 0.00, 0.0, 0.50, 0.0), 1.0, 0.6),
    "AO": ((0.80, 0.00, 0.55, 0.0, 0.30, 0.0), 1.0, 1.2),
    "AW": ((0.85, 0.00, 0.35, 0.0, 0.50, 0.0), 1.0, 1.0),
    "AY": ((0.85, 0.35, 0.00, 0.0, 0.60, 0.0), 1.0, 1.0),
    "EH": ((0.60, 0.50, 0.00, 0.0, 0.70, 0.0), 1.0, 1.0),
    "ER": ((0.40, 0.00, 0.40, 0.0, 0.40, 0.0), 1.0, 1.0),
    "EY": ((0.50, 0.65, 0.00, 0.0, 0.75, 0.0), 1.0, 1.0),
    "IH": ((0.40, 0.60, 0.00, 0.0, 0.70, 0.0), 1.0, 1.0),
    "IY": ((0.30, 0.90, 0.00, 0.0, 0.80, 0.0), 1.0, 1.5),
    "OW": ((0.55, 0.00, 0.80, 0.0, 0.30, 0.0), 1.0, 1.5),
    "OY": ((0.60, 0.00, 0.60, 0.0, 0.40, 0.0), 1.0, 1.2),
    "UH": ((0.40, 0.00, 0.65, 0.0, 0.30, 0.0), 1.0, 1.5),
    "UW": ((0.25, 0.00, 1.00, 0.0, 0.20, 0.0), 1.0, 2.0),
    # lips pressed together
    "M": ((0.00, 0.00, 0.00, 1.0, 0.00, 0.0), 8.0, 2.0),
    "B": ((0.00, 0.00, 0.00, 1.0, 0.00, 0.0), 8.0, 2.0),
    "P": ((0.00, 0.00, 0.00, 1.0, 0.00, 0.0), 8.0, 2.0),
    # lower lip to the upper teeth
    "F": ((0.10, 0.10, 0.00, 0.0, 0.80, 1.0), 5.0, 5.0),
    "V": ((0.10, 0.10, 0.00, 0.0, 0.80, 1.0), 5.0, 5.0),
    # rounded and protruded consonants
    "W": ((0.20, 0.00, 1.00, 0.0, 0.10, 0.0), 2.0, 3.0),
    "R": ((0.30, 0.00, 0.50, 0.0, 0.40, 0.0), 1.0, 1.5),
    "SH": ((0.20, 0.00, 0.55, 0.0, 0.90, 0.0), 2.0, 2.0),
    "ZH": ((0.20, 0.00, 0.55, 0.0, 0.90, 0.0), 2.0, 2.0),
    "CH": ((0.20, 0.00, 0.50, 0.0, 0.90, 0.0), 2.0, 2.0),
    "JH": ((0.20, 0.00, 0.50, 0.0, 0.90, 0.0), 2.0, 2.0),
    # teeth close, lips free or spread
    "S": ((0.15, 0.50, 0.00, 0.0, 1.00, 0.0), 2.0, 0.8),
    "Z": ((0.15, 0.50, 0.00, 0.0, 1.00, 0.0), 2.0, 0.8),
    "Y": ((0.25, 0.70, 0.00, 0.0, 0.70, 0.0), 1.0, 1.0),
    "TH": ((0.25, 0.20, 0.00, 0.0, 0.80, 0.0), 1.5, 0.5),
    "DH": ((0.25, 0.20, 0.00, 0.0, 0.80, 0.0), 1.5, 0.5),
    # tongue consonants: the jaw half open, the lips left to the neighbours
    "T": ((0.25, 0.20, 0.00, 0.0, 0.60, 0.0), 1.0, 0.2),
    "D": ((0.25, 0.20, 0.00, 0.0, 0.60, 0.0), 1.0, 0.2),
    "N": ((0.25, 0.20, 0.00, 0.0, 0.50, 0.0), 1.0, 0.2),
    "L": ((0.30, 0.20, 0.00, 0.0, 0.50, 0.0), 1.0, 0.2),
    "K": ((0.35, 0.10, 0.00, 0.0, 0.40, 0.0), 0.6, 0.1),
    "G": ((0.35, 0.10, 0.00, 0.0, 0.40, 0.0), 0.6, 0.1),
    "NG": ((0.30, 0.10, 0.00, 0.0, 0.40, 0.0), 0.6, 0.1),
    "HH": ((0.45, 0.10, 0.00, 0.0, 0.40, 0.0), 0.3, 0.1),
    # lips at rest
    SILENCE: ((0.00, 0.00, 0.00, 0.0, 0.00, 0.0), 3.0, 3.0),
}

# Reach of a phone's dominance, as the distance in seconds where it falls to 1/e: ahead of the phone (anticipation)
# and after it (carry-over); rounding and spreading reach further than the jaw.
_JAW_AHEAD_S, _JAW_AFTER_S = 0.06, 0.04
_LIPS_AHEAD_S, _LIPS_AFTER_S = 0.12, 0.06
# Lips pressing together or onto the teeth are quick, forceful gestures: they dominate their own
# span but reach their neighbours for only this share of the jaw's reach, or a 50 ms /m/ would
# hold the lips shut for 200 ms.
_QUICK = frozenset({"M", "B", "P", "F", "V"})
_QUICK_REACH = 0.5
_REACH = 3.0  # reaches after which a dominance (exp(-9)) counts as zero


def _dominance(n_frames: int, start: int, end: int, ahead: float, after: float) -> tuple[slice, np.ndarray]:
    """A phone's unit dominance over the frames it reaches: 1 inside [start, end), decaying outside."""
    first = max(0, start - int(np.ceil(_REACH * ahead * PHONE_RATE)))
    last = min(n_frames, end + int(np.ceil(_REACH * after * PHONE_RATE)))
    t = np.arange(first, last, dtype=np.float64) + 0.5
    before = np.clip(start - t, 0.0, None) / (ahead * PHONE_RATE)
    behind = np.clip(t - end, 0.0, None) / (after * PHONE_RATE)
    return slice(first, last), np.exp(-np.square(before + behind))


def coarticulate(phones: PhoneTrack, n_frames: int) -> np.ndarray:
    """(n_frames, 6) float32 lip shape every 10 ms, channels as CHANNELS, each in [0, 1]."""
    numerator = np.zeros((n_frames, len(CHANNELS)))
    weight = np.zeros((n_frames, len(CHANNELS)))
    for label, start, end in zip(phones.labels, phones.starts.tolist(), phones.ends.tolist()):
        if start >= n_frames:
            break
        target, jaw, lips = _VISEMES.get(label, _VISEMES[SILENCE])
        target = np.asarray(target)
        quick = _QUICK_REACH if label in _QUICK else 1.0
        for channels, strength, ahead, after in (
            (_JAW, jaw, quick * _JAW_AHEAD_S, quick * _JAW_AFTER_S),
            (_LIPS, lips, _LIPS_AHEAD_S, _LIPS_AFTER_S),
        ):
            span, dominance = _dominance(n_frames, start, end, ahead, after)
            numerator[span, channels] += strength * dominance[:, None] * target[channels]
            weight[span, channels] += strength * dominance[:, None]
    # Frames no phone reaches (past the recording's end) rest.
    shape = np.divide(numerator, weight, out=np.zeros_like(numerator), where=weight > 1e-9)
    return np.clip(shape, 0.0, 1.0).astype(np.float32)
