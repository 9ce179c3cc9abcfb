"""Speech -> target mouth shape per video frame, for the built-in engine that needs no weights.

Two stages. `analyse_speech` measures acoustic cues every 10 ms (loudness in the speech band,
voicing, spectral brightness, plosive onsets, voice activity); it depends only on the audio, so
it is cached per recording, as are the timed phones (`koubo.features.phones`). `mouth_targets`
turns them into the mouth's shape per video frame; it is cheap and runs for each frame rate and
expressiveness.

Loudness says how far the jaw moves and when the speaker pauses; the phones say which shape the
sound has: the lips close for /m b p/, round for /u o w/, spread for /i/, touch the teeth for
/f v/ (see `koubo.features.visemes`). Without phones the targets come from the acoustic cues
alone (aperture from loudness, width from brightness), as before phones were recognised.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import get_window, resample_poly

from koubo.features.formants import Formants
from koubo.features.phones import SILENCE, PhoneTrack
from koubo.features.visemes import CHANNELS, coarticulate
from koubo.options import EXPRESSIVENESS_MAX, EXPRESSIVENESS_MIN

ENVELOPE_RATE = 100  # Hz: analysis frames every 10 ms, frame-rate independent, cached per audio

_ANALYSIS_RATE = 16_000
_HOP = _ANALYSIS_RATE // ENVELOPE_RATE
_BLOCK_FRAMES = 2048  # frames analysed at once: bounds memory for half-hour recordings

# Loudness and spectral shape: 25 ms windows, short enough to see a 60 ms stop closure.
_SHORT_WIN = 400
_SHORT_FFT = 512
# Voicing: measured at 8 kHz (pitch needs no more, and it is the costliest cue) over 50 ms
# windows, which hold three periods of a 60 Hz voice; the FFT is long enough that the
# autocorrelation computed through it does not wrap around.
_VOICING_RATE = 8_000
_VOICING_HOP = _VOICING_RATE // ENVELOPE_RATE
_VOICING_WIN = 400
_VOICING_FFT = 1024

_SPEECH_BAND_HZ = (300.0, 3400.0)
_BRIGHT_SPLIT_HZ = 1500.0
_BRIGHT_TOP_HZ = 4000.0
_PITCH_HZ = (60.0, 400.0)

_SILENCE_DB = -100.0  # loudness of digital silence; also the floor of every dB value here
_POWER_FLOOR = 10.0 ** (_SILENCE_DB / 10.0)

# Voice activity.
_ABSOLUTE_SPEECH_DB = -70.0  # quieter than this is never speech, however quiet the recording
_SPEECH_ABOVE_FLOOR_DB = 9.0
_MAX_FLOOR_BELOW_PEAK_DB = 20.0  # without pauses the 5th percentile is quiet speech, not background
_VOICED = 0.5
_MIN_VOICED_FRAMES = 3  # a stretch with less than 30 ms of voicing is a click, cough or breath
_BRIDGE_FRAMES = 25  # gaps up to 250 ms (stop closures, short word gaps) stay inside speech
_HANGOVER_FRAMES = 5

# Plosive onsets: a rise of this many dB within 40 ms, with sound in the 250 ms before the dip.
_ONSET_LOOKBACK = 4
_ONSET_CONTEXT = 25
_ONSET_MIN_RISE_DB = 9.0
_ONSET_FULL_RISE_DB = 24.0
_ONSET_CONTEXT_DB = 15.0


@dataclass(frozen=True)
class SpeechEnvelope:
    """Acoustic cues every 1 / ENVELOPE_RATE s; frame k describes the span [k, k + 1) * 10 ms."""

    loudness: np.ndarray  # (T,) float32 dB: mean square of the 300-3400 Hz band (0 dB = 1.0)
    voicing: np.ndarray  # (T,) float32 0..1: normalised autocorrelation peak at 60-400 Hz pitch lags
    # (T,) float32 dB: energy 1.5-4 kHz over 300 Hz-1.5 kHz. Gain-independent; high F2 (/i/ /e/,
    # spread lips) -> high, low F2 (/u/ /o/, rounded lips) -> low.
    brightness: np.ndarray
    onset: np.ndarray  # (T,) float32 0..1: abrupt loudness rise after a short dip (plosive release)
    speech: np.ndarray  # (T,) bool: voice activity, short gaps bridged

    @property
    def duration(self) -> float:
        return len(self.loudness) / ENVELOPE_RATE


@dataclass(frozen=True)
class MouthTargets:
    """The mouth shape the speech asks for, one entry per output video frame.

    `aperture`, `width` and `speech` are always given; the phonetic channels default to what
    aperture and width imply, so an engine can read every channel whatever made the targets.
    """

    fps: float
    aperture: np.ndarray  # (n,) float32 in [0, 1]: 0 closed / at rest, 1 widest in normal loud speech
    width: np.ndarray  # (n,) float32 in [-1, 1]: -1 rounded, 0 neutral, +1 spread
    speech: np.ndarray  # (n,) bool
    rounding: np.ndarray | None = None  # (n,) float32 in [0, 1]: lip rounding / protrusion (/u/ /o/ /ü/)
    closure: np.ndarray | None = None  # (n,) float32 in [0, 1]: 1 = lips pressed together (/m/ /b/ /p/)
    teeth: np.ndarray | None = None  # (n,) float32 in [0, 1]: how much of the upper teeth shows
    labiodental: np.ndarray | None = None  # (n,) float32 in [0, 1]: lower lip tucked to the upper teeth (/f/ /v/)

    def __post_init__(self) -> None:
        n = len(self.aperture)
        zeros = np.zeros(n, dtype=np.float32)
        defaults = {
            "rounding": np.clip(-self.width, 0.0, 1.0).astype(np.float32),
            "closure": zeros,
            "teeth": np.clip(self.aperture, 0.0, 1.0).astype(np.float32),
            "labiodental": zeros,
        }
        for name, default in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)


# --- analysis ---------------------------------------------------------------------------------


def _frames(samples: np.ndarray, win: int, n_frames: int, hop: int = _HOP) -> Iterator[np.ndarray]:
    """Blocks of (<= _BLOCK_FRAMES, win) windows, window k centred on sample k * hop + hop / 2."""
    left = win // 2 - hop // 2
    padded = np.pad(samples, (left, win))
    view = np.lib.stride_tricks.sliding_window_view(padded, win)[::hop]
    for start in range(0, n_frames, _BLOCK_FRAMES):
        yield view[start : min(start + _BLOCK_FRAMES, n_frames)]


def _bins(n_fft: int, low_hz: float, high_hz: float) -> slice:
    hz_per_bin = _ANALYSIS_RATE / n_fft
    return slice(int(np.ceil(low_hz / hz_per_bin)), int(np.floor(high_hz / hz_per_bin)) + 1)


def _to_db(power: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(power, _POWER_FLOOR))


def _band_levels(samples: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Speech-band loudness (dB) and brightness (dB) per frame from one short-window spectrum."""
    window = get_window("hann", _SHORT_WIN)
    # Parseval: twice the one-sided band power over (n_fft * window energy) is the band's mean
    # square.
    scale = 2.0 / (_SHORT_FFT * np.sum(window**2))
    speech_band = _bins(_SHORT_FFT, *_SPEECH_BAND_HZ)
    low_band = _bins(_SHORT_FFT, _SPEECH_BAND_HZ[0], _BRIGHT_SPLIT_HZ)
    high_band = _bins(_SHORT_FFT, _BRIGHT_SPLIT_HZ, _BRIGHT_TOP_HZ)
    loudness, brightness = [], []
    for block in _frames(samples, _SHORT_WIN, n_frames):
        power = np.abs(np.fft.rfft(block * window, n=_SHORT_FFT, axis=1)) ** 2 * scale
        loudness.append(_to_db(power[:, speech_band].sum(axis=1)))
        low = power[:, low_band].sum(axis=1) + _POWER_FLOOR
        high = power[:, high_band].sum(axis=1) + _POWER_FLOOR
        brightness.append(10.0 * np.log10(high / low))
    return np.concatenate(loudness), np.concatenate(brightness)


def _voicing(samples: np.ndarray, n_frames: int) -> np.ndarray:
    """Autocorrelation peak over pitch lags, corrected for the window's own taper (Boersma)."""
    samples = resample_poly(samples, _VOICING_RATE, _ANALYSIS_RATE)
    window = get_window("hann", _VOICING_WIN)
    window_ac = np.fft.irfft(np.abs(np.fft.rfft(window, n=_VOICING_FFT)) ** 2, n=_VOICING_FFT)
    lags = slice(int(_VOICING_RATE / _PITCH_HZ[1]), int(_VOICING_RATE / _PITCH_HZ[0]) + 1)
    taper = window_ac[lags] / window_ac[0]
    silent = _POWER_FLOOR * np.sum(window**2)
    voicing = []
    for block in _frames(samples, _VOICING_WIN, n_frames, _VOICING_HOP):
        centred = (block - block.mean(axis=1, keepdims=True)) * window
        spectrum = np.abs(np.fft.rfft(centred, n=_VOICING_FFT, axis=1)) ** 2
        ac = np.fft.irfft(spectrum, n=_VOICING_FFT, axis=1)
        energy = ac[:, :1]
        peak = np.max(ac[:, lags] / np.maximum(energy, silent) / taper, axis=1)
        voicing.append(np.where(energy[:, 0] > silent, np.clip(peak, 0.0, 1.0), 0.0))
    return np.concatenate(voicing)


def _past(values: np.ndarray, first: int, last: int) -> np.ndarray:
    """(T, last - first + 1) view: row t holds values[t - last .. t - first], the start edge-padded."""
    padded = np.pad(values, (last, 0), mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, last - first + 1)[: len(values)]


def _onsets(loudness: np.ndarray) -> np.ndarray:
    dip = _past(loudness, 1, _ONSET_LOOKBACK).min(axis=1)
    rise = loudness - dip
    # Only a dip between sounds is a closure; a rise after a long silence is an utterance start.
    before_dip = _past(loudness, _ONSET_LOOKBACK + 1, _ONSET_CONTEXT).max(axis=1)
    after_sound = before_dip - dip >= _ONSET_CONTEXT_DB
    strength = (rise - _ONSET_MIN_RISE_DB) / (_ONSET_FULL_RISE_DB - _ONSET_MIN_RISE_DB)
    return np.where(after_sound, np.clip(strength, 0.0, 1.0), 0.0)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _noise_floor(loudness: np.ndarray) -> float:
    """Background level (dB): the quiet end of the recording, capped so pause-free speech counts."""
    low, high = np.percentile(loudness, [5, 95])
    return float(min(low, high - _MAX_FLOOR_BELOW_PEAK_DB))


def _voice_activity(loudness: np.ndarray, voicing: np.ndarray) -> np.ndarray:
    threshold = max(_noise_floor(loudness) + _SPEECH_ABOVE_FLOOR_DB, _ABSOLUTE_SPEECH_DB)
    active = loudness > threshold
    for start, end in _runs(~active):
        if start > 0 and end < len(active) and end - start <= _BRIDGE_FRAMES:
            active[start:end] = True
    speech = np.zeros_like(active)
    voiced = voicing > _VOICED
    for start, end in _runs(active):
        if np.count_nonzero(voiced[start:end]) >= _MIN_VOICED_FRAMES:
            speech[max(0, start - _HANGOVER_FRAMES) : end + _HANGOVER_FRAMES] = True
    return speech


def analyse_speech(samples: np.ndarray, sample_rate: int = 16_000) -> SpeechEnvelope:
    """Acoustic cues every 10 ms from mono samples (any rate; analysed at 16 kHz)."""
    # float32 halves the copies a long recording makes; each block is transformed in float64.
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if sample_rate != _ANALYSIS_RATE:
        common = np.gcd(int(sample_rate), _ANALYSIS_RATE)
        samples = resample_poly(samples, _ANALYSIS_RATE // common, int(sample_rate) // common)
    n_frames = -(-len(samples) // _HOP)
    if n_frames == 0:
        empty = np.zeros(0, dtype=np.float32)
        return SpeechEnvelope(empty, empty, empty, empty, np.zeros(0, dtype=bool))
    loudness, brightness = _band_levels(samples, n_frames)
    voicing = _voicing(samples, n_frames)
    return SpeechEnvelope(
        loudness=loudness.astype(np.float32),
        voicing=voicing.astype(np.float32),
        brightness=brightness.astype(np.float32),
        onset=_onsets(loudness).astype(np.float32),
        speech=_voice_activity(loudness, voicing),
    )


# --- targets ----------------------------------------------------------------------------------

# Loudness -> aperture: the recording's own loud speech (95th percentile) opens the mouth to 0.9,
# louder emphasis up to 1; the bottom of the range sits just above the noise floor but never
# more than 30 dB under the top, so a clean recording does not open the mouth on breath noise.
_TOP_PERCENTILE = 95.0
_TOP_APERTURE = 0.9
_MARGIN_ABOVE_FLOOR_DB = 6.0
_MAX_RANGE_DB = 30.0
_COMPRESSION = 0.7  # exponent < 1: quiet consonants still part the lips visibly
_UNVOICED_SHARE = 0.55  # fricatives and whispers open the mouth about half as much as vowels

# Timing, as the time to cover 95 % of a step (three time constants): the lips start opening
# before the sound they make and close after it, which is how speakers move.
_OPEN_RAMP_S = 0.04
_CLOSE_RAMP_S = 0.08
_JITTER_SIGMA_FRAMES = 1.0

# Stop closures: frames shortly before a plosive release whose own opening is small are closed
# outright, so the lip contact of /p/ /b/ survives the closing ramp.
_CLOSURE_LOOKAHEAD = 8
_CLOSURE_ONSET = 0.3
_CLOSURE_MAX_OPENING = 0.25

# Width: brightness relative to this recording's typical voiced brightness, in dB per unit tanh.
_WIDTH_SCALE_DB = 6.0
_WIDTH_SIGMA_S = 0.03  # lip rounding moves slower than the jaw
_WIDTH_VOICING = (0.35, 0.65)  # voicing from no width cue to the full cue
_MIN_VOICED_FOR_WIDTH = 10


def _aperture_drive(env: SpeechEnvelope) -> np.ndarray:
    """(T,) the opening each 10 ms frame asks for, before any smoothing."""
    if not env.speech.any():
        return np.zeros(len(env.loudness))
    loudness = env.loudness.astype(np.float64)
    top = float(np.percentile(loudness[env.speech], _TOP_PERCENTILE))
    bottom = max(_noise_floor(loudness) + _MARGIN_ABOVE_FLOOR_DB, top - _MAX_RANGE_DB)
    level = np.clip((loudness - bottom) / max(top - bottom, 1.0), 0.0, None)
    opening = np.minimum(_TOP_APERTURE * level**_COMPRESSION, 1.0)
    opening *= _UNVOICED_SHARE + (1.0 - _UNVOICED_SHARE) * env.voicing
    return np.where(env.speech, opening, 0.0)


def _stop_closures(env: SpeechEnvelope, drive: np.ndarray) -> np.ndarray:
    """(T,) bool: quiet frames within 80 ms before a plosive release."""
    padded = np.pad(env.onset, (0, _CLOSURE_LOOKAHEAD))
    ahead = np.lib.stride_tricks.sliding_window_view(padded[1:], _CLOSURE_LOOKAHEAD).max(axis=1)
    return (ahead > _CLOSURE_ONSET) & (drive < _CLOSURE_MAX_OPENING)


def _decaying_hold(drive: np.ndarray, keep: float, reset: np.ndarray) -> np.ndarray:
    """y[t] = max(drive[t], keep * y[t-1]), or drive[t] where reset: rises at once, decays slowly."""
    out = np.empty_like(drive)
    held = 0.0
    for t, (value, instant) in enumerate(zip(drive.tolist(), reset.tolist())):
        held = value if instant else max(value, held * keep)
        out[t] = held
    return out


def _smooth_aperture(drive: np.ndarray, closures: np.ndarray) -> np.ndarray:
    """Open ahead of each peak and close after it without moving the peak itself.

    A causal smoother would lag the sound by its time constant. Instead a forward pass holds each
    value and lets it decay over the closing ramp, a backward pass does the same over the opening
    ramp, and the upper of the two is kept: every peak stays where the sound's peak is.
    """
    frame_s = 1.0 / ENVELOPE_RATE
    closing = np.exp(-frame_s / (_CLOSE_RAMP_S / 3.0))
    opening = np.exp(-frame_s / (_OPEN_RAMP_S / 3.0))
    after = _decaying_hold(drive, closing, closures)
    before = _decaying_hold(drive[::-1], opening, closures[::-1])[::-1]
    held = np.maximum(after, before)
    return gaussian_filter1d(held, _JITTER_SIGMA_FRAMES, mode="nearest")


def _width_drive(env: SpeechEnvelope) -> np.ndarray:
    low, high = _WIDTH_VOICING
    weight = np.clip((env.voicing - low) / (high - low), 0.0, 1.0) * env.speech
    voiced = weight >= 1.0
    if np.count_nonzero(voiced) < _MIN_VOICED_FOR_WIDTH:
        return np.zeros(len(env.brightness))
    # Relative to the recording's own median, because the microphone and room tilt the spectrum
    # by more than the difference between vowels.
    reference = float(np.median(env.brightness[voiced]))
    return np.tanh((env.brightness - reference) / _WIDTH_SCALE_DB) * weight


def _span_mean(values: np.ndarray, fps: float, n_frames: int, fill: float) -> np.ndarray:
    """Mean of the piecewise-constant 10 ms values over each video frame's span; `fill` past the
    end of the audio."""
    edges = np.arange(n_frames + 1) * (ENVELOPE_RATE / fps)
    total = len(values)
    extended = np.concatenate([values.astype(np.float64), [fill]])
    cumulative = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    whole = np.minimum(np.floor(edges).astype(np.int64), total)
    integral = cumulative[whole] + (edges - whole) * extended[whole]
    return np.diff(integral) / np.diff(edges)


def _at_frame_centres(values: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """The 10 ms values linearly interpolated at each video frame's centre time; 0 past the end."""
    centres = (np.arange(n_frames) + 0.5) * (ENVELOPE_RATE / fps) - 0.5
    return np.interp(centres, np.arange(len(values)), values, right=0.0)


# Phones and loudness: the phone says how far this sound opens the mouth, loudness how much of
# that the speaker gives it (stress, emphasis, trailing off). Loudness alone opens a loud /m/ and
# leaves a quiet /a/ half shut.
_LOUDNESS_WEIGHT = 0.3
# Part of the opening comes straight from the acoustic predictor (loudness), outside closures.
# Measured when it was chosen: on the real clips of bench/targets.py it cost a little correlation
# with the measured mouth (mean r 0.27 -> 0.25) and gained much in step with loudness (r 0.54 ->
# 0.64 on espeak speech), which is what the sync check of finished videos (koubo.quality) measures.
_ACOUSTIC_SHARE = 0.3
_UNNAMED_VOWEL = "AH"  # what voiced speech the recogniser calls silence is taken for
_CLOSED = 0.5  # closure above which the lips touch: the opening is held shut there
# Coarticulation pulls every opening towards its neighbours'; the recording's loud open sounds are
# brought back to the acoustic predictor's range (its 95th percentile to _TOP_APERTURE), by at
# most this factor so that a mumbled recording is not opened wide.
_MAX_APERTURE_GAIN = 2.5
# Width: the phones' spread minus rounding around a neutral mouth (an /a/ is slightly spread), plus
# the brightness cue's share (formant F2 rises with spread lips and falls with rounded ones).
_PHONE_WIDTH_GAIN = 1.5
_NEUTRAL_SPREAD = 0.1
_BRIGHTNESS_WIDTH_SHARE = 0.5
# Rounding heard in F2: the recogniser's English phones name Mandarin vowels poorly, but a low F2
# is a rounded vowel in any language (/u/ ~ 750 Hz, /o/ ~ 1000 Hz, /a/ ~ 1300 Hz, /i/ ~ 2000 Hz).
# It misses fronted English /u/ (F2 ~ 1500 Hz), which the phones catch; each gives half.
_ROUNDED_F2_HZ = (1350.0, 900.0)  # F2 from no rounding to full rounding
_FORMANT_ROUNDING_SHARE = 0.5
_FORMANT_SIGMA_S = 0.03

# Teeth show once the lips part this much, or when the lower lip is tucked under them.
_TEETH_FULL_APERTURE = 0.3


def _acoustic_targets(env: SpeechEnvelope) -> tuple[np.ndarray, np.ndarray]:
    """Aperture and width every 10 ms from the acoustic cues alone."""
    drive = _aperture_drive(env)
    aperture = _smooth_aperture(drive, _stop_closures(env, drive))
    width = gaussian_filter1d(_width_drive(env), _WIDTH_SIGMA_S * ENVELOPE_RATE, mode="nearest")
    return aperture, width


def _voiced_silence_as_vowel(env: SpeechEnvelope, phones: PhoneTrack) -> PhoneTrack:
    """Phones where a "silence" the recogniser could not name, but which is voiced speech, is a
    neutral vowel: its opening then follows loudness instead of resting (unusual voices, singing)."""
    labels = list(phones.labels)
    for i, (label, start, end) in enumerate(zip(labels, phones.starts.tolist(), phones.ends.tolist())):
        if label == SILENCE and end > start:
            voiced = env.speech[start:end] & (env.voicing[start:end] > _VOICED)
            if voiced.mean() > 0.5:
                labels[i] = _UNNAMED_VOWEL
    return PhoneTrack(tuple(labels), phones.starts, phones.ends)


def _heard_rounding(env: SpeechEnvelope, formants: Formants) -> tuple[np.ndarray, np.ndarray]:
    """Rounding implied by F2 and how far to trust it (0..1, voiced speech with a formant), per 10 ms."""
    f2 = formants.f2.astype(np.float64)
    found = np.isfinite(f2)
    low, high = _WIDTH_VOICING
    trust = np.clip((env.voicing - low) / (high - low), 0.0, 1.0) * env.speech * found
    no_rounding, full = _ROUNDED_F2_HZ
    rounding = np.clip((no_rounding - np.where(found, f2, no_rounding)) / (no_rounding - full), 0.0, 1.0)
    sigma = _FORMANT_SIGMA_S * ENVELOPE_RATE
    weight = gaussian_filter1d(trust, sigma, mode="nearest")
    smoothed = gaussian_filter1d(rounding * trust, sigma, mode="nearest") / np.maximum(weight, 1e-6)
    return smoothed, weight


def _phonetic_targets(env: SpeechEnvelope, phones: PhoneTrack, formants: Formants | None) -> dict[str, np.ndarray]:
    """Every channel every 10 ms from the phones (and F2), scaled by loudness and gated by voice activity."""
    phones = _voiced_silence_as_vowel(env, phones)
    shape = dict(zip(CHANNELS, coarticulate(phones, len(env.loudness)).astype(np.float64).T))
    if formants is not None and len(formants.f2) == len(env.loudness):
        heard, trust = _heard_rounding(env, formants)
        share = _FORMANT_ROUNDING_SHARE * trust
        shape["rounding"] = (1.0 - share) * shape["rounding"] + share * heard
    speech = env.speech.astype(np.float64)
    closure = shape["closure"] * speech
    loudness = (1.0 - _LOUDNESS_WEIGHT) * speech + _LOUDNESS_WEIGHT * _aperture_drive(env) / _TOP_APERTURE
    drive = shape["aperture"] * loudness * (1.0 - closure)
    closed = (closure > _CLOSED) | _stop_closures(env, drive)
    aperture = _smooth_aperture(np.clip(drive, 0.0, 1.0), closed)
    acoustic, _ = _acoustic_targets(env)
    aperture = (1.0 - _ACOUSTIC_SHARE) * aperture + _ACOUSTIC_SHARE * acoustic * (1.0 - closure) * ~closed
    if env.speech.any():
        top = float(np.percentile(aperture[env.speech], _TOP_PERCENTILE))
        aperture *= min(_TOP_APERTURE / max(top, 1e-6), _MAX_APERTURE_GAIN)
    aperture = np.clip(aperture, 0.0, 1.0)
    lips = shape["spread"] - shape["rounding"] - _NEUTRAL_SPREAD
    width = np.tanh(_PHONE_WIDTH_GAIN * lips) * speech
    brightness = gaussian_filter1d(_width_drive(env), _WIDTH_SIGMA_S * ENVELOPE_RATE, mode="nearest")
    width = (1.0 - _BRIGHTNESS_WIDTH_SHARE) * width + _BRIGHTNESS_WIDTH_SHARE * brightness
    labiodental = shape["labiodental"] * speech
    parted = np.clip(aperture / _TEETH_FULL_APERTURE, 0.0, 1.0)
    return {
        "aperture": aperture,
        "width": width,
        "rounding": shape["rounding"] * speech,
        "closure": closure,
        "teeth": np.maximum(shape["teeth"] * parted, labiodental) * speech,
        "labiodental": labiodental,
    }


def mouth_targets(
    env: SpeechEnvelope,
    fps: float,
    n_frames: int,
    *,
    expressiveness: float = 1.0,
    phones: PhoneTrack | None = None,
    formants: Formants | None = None,
) -> MouthTargets:
    """The mouth's shape for each of n_frames video frames at fps; from the acoustic cues alone
    when `phones` is None. `formants` refine the rounding the phones give.

    The shape is computed every 10 ms and read at each video frame's centre time (not averaged
    over its span), so a 1-2 frame lip closure before a plosive is not averaged away at 24-30 fps.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if not EXPRESSIVENESS_MIN <= expressiveness <= EXPRESSIVENESS_MAX:
        raise ValueError(
            f"expressiveness must be within [{EXPRESSIVENESS_MIN}, {EXPRESSIVENESS_MAX}], got {expressiveness}"
        )
    speech = _span_mean(env.speech, fps, n_frames, 0.0) >= 0.5
    if len(env.loudness) == 0:
        rest = np.zeros(n_frames, dtype=np.float32)
        return MouthTargets(fps=fps, aperture=rest, width=rest.copy(), speech=speech)
    if phones is None:
        aperture, width = _acoustic_targets(env)
        channels = {"aperture": aperture, "width": width}
    else:
        channels = _phonetic_targets(env, phones, formants)
    low = {"width": -1.0}
    scaled = {
        name: np.clip(expressiveness * _at_frame_centres(values, fps, n_frames), low.get(name, 0.0), 1.0).astype(
            np.float32
        )
        for name, values in channels.items()
    }
    return MouthTargets(fps=fps, speech=speech, **scaled)


def frame_loudness(env: SpeechEnvelope, fps: float, n_frames: int) -> np.ndarray:
    """(n,) float32 speech-band loudness (dB) over each video frame's span, power-averaged;
    silence (-100 dB) past the end of the audio."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    power = 10.0 ** (env.loudness.astype(np.float64) / 10.0)
    return _to_db(_span_mean(power, fps, n_frames, _POWER_FLOOR)).astype(np.float32)
