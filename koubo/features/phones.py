"""Speech -> timed phones, by PocketSphinx's all-phone search with the models inside its wheel.

PocketSphinx 5 ships an en-us acoustic model and a phonetic language model (phone n-grams, no
words), so it names the sound in every 10 ms of a recording without a dictionary or a download.
This is what Rhubarb Lip Sync builds its mouth shapes on; the settings below are Rhubarb's.
The model is English, but the phones that shape the lips (closed /m b p/, lip-on-teeth /f v/,
rounded /u o w/, spread /i/) are the same in Mandarin, and on Mandarin speech the recogniser
names its nearest English phone, which is what the lips need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PHONE_RATE = 100  # Hz: PocketSphinx's frame rate, the same as the speech envelope's
SILENCE = "SIL"

_RATE = 16_000
_HOP = _RATE // PHONE_RATE
# Only the stretches of speech are decoded, each with a margin, as Rhubarb does: the
# recogniser's cepstral mean is taken per piece, and long silences would skew it enough to turn
# an /m/ into a /l/. A stretch longer than _PIECE_S is cut at the quietest 10 ms of its last
# seconds, so memory stays bounded and a cut never falls inside a loud sound.
_MARGIN_S = 0.15
_PIECE_S = 30.0
_CUT_SEARCH_S = 5.0
# Digital silence has no spectrum for cepstral normalisation; a faint fixed noise (Rhubarb
# dithers for the same reason) gives it one, and a fixed seed keeps the result reproducible.
_DITHER = 1.0 / 32768.0


@dataclass(frozen=True)
class PhoneTrack:
    """Phones in time order over the recording's speech; phone i spans 10 ms frames [starts[i], ends[i]),
    frames outside every phone are silence."""

    labels: tuple[str, ...]  # ARPAbet without stress (AA, B, ...), SIL for silence and noise
    starts: np.ndarray  # (P,) int32
    ends: np.ndarray  # (P,) int32

    def __len__(self) -> int:
        return len(self.labels)


def _decoder():
    # Imported here: the rest of koubo (and Wav2Lip users) never pays for loading the model.
    from pocketsphinx import Config, Decoder, get_model_path

    config = Config(
        hmm=get_model_path("en-us/en-us"),
        allphone=get_model_path("en-us/en-us-phone.lm.bin"),
        lm=None,
        dict=None,
        allphone_ci=True,
        lw=0.8,  # Rhubarb: lower flutters, higher freezes the phone sequence
        beam=1e-20,
        pbeam=1e-20,
        cmn="batch",
        samprate=float(_RATE),
        loglevel="FATAL",
    )
    return Decoder(config)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _piece_bounds(samples: np.ndarray, speech: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) sample ranges of the pieces decoded separately: the speech, with margins."""
    margin = int(_MARGIN_S * PHONE_RATE)
    widened = np.zeros(len(speech), dtype=bool)
    for start, end in _runs(speech):
        widened[max(0, start - margin) : end + margin] = True
    piece, search = int(_PIECE_S * _RATE), int(_CUT_SEARCH_S * _RATE)
    bounds = []
    for first, last in _runs(widened):
        start, stop = first * _HOP, min(last * _HOP, len(samples))
        while stop - start > piece:
            window = samples[start + piece - search : start + piece].astype(np.float64)
            energy = np.square(window[: len(window) // _HOP * _HOP].reshape(-1, _HOP)).sum(axis=1)
            cut = start + piece - search + int(np.argmin(energy)) * _HOP
            bounds.append((start, cut))
            start = cut
        bounds.append((start, stop))
    return bounds


def _label(word: str) -> str:
    # Fillers (+NSN+ noise, +SPN+ ...) and silences rest the lips like silence does.
    return SILENCE if word.startswith("+") or word in ("SIL", "<sil>", "<s>", "</s>") else word


def recognise_phones(samples: np.ndarray, speech: np.ndarray) -> PhoneTrack:
    """Timed phones of 16 kHz mono float32 samples; `speech` marks the 10 ms frames with speech
    (the envelope's voice activity). Outside speech there are no phones: it is silence."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    noise = np.random.default_rng(0).standard_normal(len(samples)).astype(np.float32) * _DITHER
    pcm = (np.clip(samples + noise, -1.0, 1.0) * 32767.0).astype(np.int16)
    decoder = _decoder()
    labels: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for begin, end in _piece_bounds(pcm, np.asarray(speech, dtype=bool)):
        if end - begin < _HOP:
            continue
        decoder.start_utt()
        decoder.process_raw(pcm[begin:end].tobytes(), full_utt=True)
        decoder.end_utt()
        offset = begin // _HOP
        for segment in decoder.seg():
            label = _label(segment.word)
            first, last = offset + segment.start_frame, offset + segment.end_frame + 1
            if labels and labels[-1] == label and ends[-1] == first:
                ends[-1] = last  # one silence, not several in a row
                continue
            labels.append(label)
            starts.append(first)
            ends.append(last)
    return PhoneTrack(tuple(labels), np.array(starts, dtype=np.int32), np.array(ends, dtype=np.int32))
