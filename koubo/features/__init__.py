"""Audio features, computed once per recording and shared by every engine.

`mel` is Wav2Lip's spectrogram for neural engines; `envelope` (acoustic cues), `phones` (timed
phones) and `formants` (F1, F2) are what the built-in engine's mouth shapes are made from, for
any frame rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from koubo.features.formants import Formants, track_formants
from koubo.features.mel import MEL_RATE, log_mel
from koubo.features.mouth import SpeechEnvelope, analyse_speech
from koubo.features.phones import PhoneTrack, recognise_phones


@dataclass(frozen=True)
class AudioFeatures:
    audio_hash: str
    duration: float  # seconds
    mel: np.ndarray  # (80, 1 + samples // 200) float32, log_mel of the 16 kHz samples
    envelope: SpeechEnvelope
    phones: PhoneTrack
    formants: Formants


def compute_audio_features(samples: np.ndarray, audio_hash: str) -> AudioFeatures:
    """Features of 16 kHz mono float32 samples; `audio_hash` names the recording they came from."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples, got shape {samples.shape}")
    envelope = analyse_speech(samples, MEL_RATE)
    return AudioFeatures(
        audio_hash=audio_hash,
        duration=len(samples) / MEL_RATE,
        mel=log_mel(samples),
        envelope=envelope,
        phones=recognise_phones(samples, envelope.speech),
        formants=track_formants(samples, len(envelope.loudness), MEL_RATE),
    )
