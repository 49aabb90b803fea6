"""The receive-side jitter buffer: a frame goes to the decoder when its marked last packet is in."""

import pytest
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from camfx.engine.transport.ice import peer_connection
from camfx.engine.transport.jitter import MarkerJitterBuffer, release_frames_at_marker

pytestmark = pytest.mark.unit


def packets(first_seq: int, timestamp: int, count: int, marker: bool = True) -> list[RtpPacket]:
    """One frame's packets; the last one marked (as senders do) unless `marker` is False."""
    out = []
    for i in range(count):
        packet = RtpPacket(
            payload_type=96, marker=int(marker and i == count - 1),
            sequence_number=(first_seq + i) % 65536, timestamp=timestamp,
        )
        packet._data = bytes([timestamp % 251, i])  # what the depayloader would have left
        out.append(packet)
    return out


def feed(buffer: JitterBuffer, stream: list[RtpPacket]) -> list[tuple[int, int, bytes]]:
    """(index of the packet whose arrival released a frame, its timestamp, its data)."""
    released = []
    for index, packet in enumerate(stream):
        _, frame = buffer.add(packet)
        if frame is not None:
            released.append((index, frame.timestamp, frame.data))
    return released


def joined(frame: list[RtpPacket]) -> bytes:
    return b"".join(p._data for p in frame)


def test_a_frame_is_released_by_its_last_packet_not_by_the_next_frame():
    frames = [packets(100 + 3 * k, 3000 * k, 3) for k in range(3)]
    stream = [p for frame in frames for p in frame]
    ours = feed(MarkerJitterBuffer(128, is_video=True), stream)
    assert ours == [(2, 0, joined(frames[0])), (5, 3000, joined(frames[1])), (8, 6000, joined(frames[2]))]
    # aiortc's own buffer hands the same frames over one packet of the next frame later, and
    # the last not at all until another frame comes.
    stock = feed(JitterBuffer(128, is_video=True), stream)
    assert stock == [(3, 0, joined(frames[0])), (6, 3000, joined(frames[1]))]


def test_a_reordered_frame_is_released_when_its_missing_packet_arrives():
    frame = packets(10, 90, 4)
    stream = [frame[0], frame[3], frame[1], frame[2]]  # the marked packet overtakes two others
    assert feed(MarkerJitterBuffer(128, is_video=True), stream) == [(3, 90, joined(frame))]


def test_a_frame_with_a_lost_packet_is_never_released_incomplete():
    frame, following = packets(10, 90, 4), packets(14, 180, 2)
    buffer = MarkerJitterBuffer(128, is_video=True)
    assert feed(buffer, [frame[0], frame[1], frame[3], *following]) == []  # frame[2] lost
    _, released = buffer.add(frame[2])  # the retransmission: both frames are whole now
    assert released is not None and released.data == joined(frame)


def test_unmarked_frames_fall_back_to_the_next_frame_rule():
    first, second = packets(10, 90, 3, marker=False), packets(13, 180, 2, marker=False)
    assert feed(MarkerJitterBuffer(128, is_video=True), first + second) == [(3, 90, joined(first))]


def test_sequence_numbers_wrap_around():
    frames = [packets(65534, 500, 3), packets(1, 600, 2)]  # 65534, 65535, 0 | 1, 2
    stream = [p for frame in frames for p in frame]
    assert feed(MarkerJitterBuffer(128, is_video=True), stream) == [
        (2, 500, joined(frames[0])), (4, 600, joined(frames[1]))
    ]


def test_a_keyframe_of_many_packets_is_one_frame():
    frame = packets(7, 42, 120)
    assert feed(MarkerJitterBuffer(512, is_video=True), frame) == [(119, 42, joined(frame))]


async def test_release_frames_at_marker_changes_video_receivers_only_once():
    pc = peer_connection()
    try:
        audio, video = pc.addTransceiver("audio"), pc.addTransceiver("video")
        assert release_frames_at_marker(pc) == 1
        assert release_frames_at_marker(pc) == 0  # already done
        buffer = video.receiver._RTCRtpReceiver__jitter_buffer
        assert isinstance(buffer, MarkerJitterBuffer) and buffer.capacity == 512
        assert type(audio.receiver._RTCRtpReceiver__jitter_buffer) is JitterBuffer
    finally:
        await pc.close()
