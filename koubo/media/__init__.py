"""Media in and out: validate uploads by content (probe), decode speech (audio) and templates,
write the finished MP4 (video). PyAV does all decoding and encoding; no ffmpeg binary."""

from koubo.media.audio import ANALYSIS_RATE, Audio, load_audio
from koubo.media.probe import AudioStreamInfo, MediaInfo, VideoStreamInfo, output_frame_count, probe
from koubo.media.video import Mp4Writer, TemplateVideo, loop_indices, read_template

__all__ = [
    "ANALYSIS_RATE",
    "Audio",
    "AudioStreamInfo",
    "MediaInfo",
    "Mp4Writer",
    "TemplateVideo",
    "VideoStreamInfo",
    "load_audio",
    "loop_indices",
    "output_frame_count",
    "probe",
    "read_template",
]
